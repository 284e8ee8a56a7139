"""The README a newcomer reads first: a short first screen, and every command and make target it names exists."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from servingbench.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCED = re.compile(r"^```[a-z]*\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
CODE = "\n".join(FENCED.findall(README) + INLINE.findall(FENCED.sub("", README)))
"""What the README shows as code (fenced blocks and inline spans): prose may say "servingbench answers"."""
FIRST_SCREEN_LINES = 40
MAKE_CALL = re.compile(r"\bmake ([a-z][a-z0-9-]*)")
COMMAND = re.compile(r"servingbench ([a-z][a-z-]*)((?: (?:--?[a-z][a-z0-9-]*|[A-Za-z0-9_./=<>$:\"'-]+))*)")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$|^<.*>$")


def test_the_first_screen_is_short_and_says_what_it_is() -> None:
    first = README.split("\n## ", 1)[0].splitlines()
    assert len(first) < FIRST_SCREEN_LINES, len(first)
    text = "\n".join(first)
    assert "make bench" in text and "make test" in text
    assert text.index("make bench") < text.index("make test")  # the main job first


def test_every_make_target_named_exists() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    defined = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, flags=re.MULTILINE))
    named = set(MAKE_CALL.findall(CODE))
    # a table cell names several targets after one `make`: "`make test` / `test-fast` / `test-busy`"
    for row in re.findall(r"^\| `make [^|]*\|", README, flags=re.MULTILINE):
        named |= set(re.findall(r"`(?:make )?([a-z][a-z0-9-]*)`", row))
    assert named, "the README names no make target"
    assert named <= defined, sorted(named - defined)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def named_commands() -> list[tuple[str, list[str]]]:
    """Every `servingbench <command> [options]` the README shows, as (command, option strings)."""
    found = []
    for command, rest in COMMAND.findall(CODE):
        words = shlex.split(rest.replace("\\", " "), posix=True) if rest.count('"') % 2 == 0 else rest.split()
        found.append((command, [word for word in words if word.startswith("--")]))
    return found


def test_every_command_named_exists() -> None:
    commands = subcommands()
    named = named_commands()
    assert {command for command, _ in named} >= {"run", "import-model", "check", "capacity", "report"}
    unknown = sorted({command for command, _ in named if command not in commands} - {"bench"})
    assert not unknown, unknown


@pytest.mark.parametrize(("command", "options"), named_commands())
def test_every_option_named_exists(command: str, options: list[str]) -> None:
    commands = subcommands()
    if command not in commands:
        pytest.skip(f"{command}: not a subcommand (checked above)")
    known = {flag for action in commands[command]._actions for flag in action.option_strings}
    for option in options:
        assert option.split("=")[0] in known, f"servingbench {command} has no {option}"
