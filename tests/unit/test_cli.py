"""The command line a person learns from --help: every option explained with its default, examples, exit statuses."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from servingbench import __version__
from servingbench.cli import build_parser, main
from servingbench.commands import EXIT_ERROR, EXIT_NOTHING_VALID, Formatter

SUBCOMMANDS = (
    "run",
    "capacity",
    "serve",
    "train",
    "import-model",
    "report",
    "compare",
    "check",
    "calibrate",
    "load-worker",
)


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_is_listed() -> None:
    assert tuple(subparsers()) == SUBCOMMANDS


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_option_has_help_and_the_epilog_has_examples(command: str) -> None:
    parser = subparsers()[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 8, f"{command} {action.option_strings or action.dest}: no help"
    assert parser.epilog and "examples:" in parser.epilog and "exit status" in parser.epilog, command
    assert parser.description, command


def test_defaults_are_shown_unless_the_help_says_what_happens() -> None:
    text = " ".join(subparsers()["run"].format_help().split())
    assert "(default: results)" in text and "(default: 127.0.0.1)" in text and "(default: 0)" in text
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text
    assert "(default: default)" not in text  # a preset flag has no default of its own


def test_help_formatter_keeps_the_examples_lines() -> None:
    assert issubclass(Formatter, argparse.RawDescriptionHelpFormatter)
    assert "  servingbench run --quick" in subparsers()["run"].format_help()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"servingbench {__version__}"


def test_a_bad_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--no-such-option"])
    assert exited.value.code == EXIT_ERROR


def test_a_bad_plan_is_one_line_and_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text("wokers = 2\n")
    assert main(["run", "--plan", str(plan), "--out", str(tmp_path / "out")]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("servingbench: error: ") and "unknown key 'wokers'" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_shell_completion_is_printed() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "servingbench.cli", "--print-completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "servingbench" in completed.stdout and "complete" in completed.stdout


INVALID_ONLY_PLAN = """
seed = 1
warmup_s = 0.1
duration_s = 0.3
repetitions = 1
min_requests = 1000000
[configs.flask-gunicorn-sync]
framework = "flask"
server = "gunicorn-sync"
[models.sleep1]
spec = "synthetic:sleep_ms=1"
scenarios = ["single"]
[scenarios.single]
endpoint = "/predict"
concurrency = [2]
"""


@pytest.mark.slow
def test_a_run_where_nothing_valid_was_measured_exits_with_its_own_status(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(INVALID_ONLY_PLAN)
    args = ["run", "--plan", str(plan), "--out", str(tmp_path / "out"), "--no-report", "--allow-shared-cores"]
    assert main(args) == EXIT_NOTHING_VALID
