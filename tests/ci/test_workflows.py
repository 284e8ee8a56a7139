"""The GitHub workflows: valid against GitHub's workflow schema, on action majors that run on Node 24, filtered by path,
and wired to make targets that exist. (`make workflows-lint` also runs actionlint where it is installed.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
COMMAND_TIMEOUT_S = 120.0
#: The first major of each action that runs on Node 24 (Node 20 actions are deprecated on hosted runners). An action
#: missing here fails the test on purpose: check its runtime, then add it.
NODE24_MAJORS = {
    "actions/checkout": 5,
    "actions/setup-python": 6,
    "actions/cache": 5,
    "actions/upload-artifact": 6,
    "actions/download-artifact": 7,
}
#: What every workflow's push and pull_request triggers must watch (each adds its own paths).
COMMON_PATHS = {"src/**", "pyproject.toml", "requirements.lock", "Makefile"}
#: Make targets the workflows call that another branch adds (the interleaved base-vs-head gate); empty once merged.
PENDING_TARGETS: set[str] = set()
MAKE_CALL = re.compile(r"\bmake\s+([a-z][a-z0-9-]*)")


def _load(path: Path) -> dict[Any, Any]:
    document: dict[Any, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def _triggers(document: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as True.
    triggers = document["on"] if "on" in document else document[True]
    assert isinstance(triggers, dict)
    return triggers


def _steps(document: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def _runs(document: dict[Any, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in _steps(document))


def test_workflows_exist() -> None:
    assert {path.name for path in WORKFLOWS} >= {"ci.yml", "bench.yml"}


def test_workflows_pass_the_github_workflow_schema() -> None:
    done = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_actions_run_on_node_24(path: Path) -> None:
    for step in _steps(_load(path)):
        if "uses" not in step:
            continue
        action, _, ref = str(step["uses"]).partition("@")
        assert action in NODE24_MAJORS, f"{action}: check that its major runs on Node 24, then list it"
        major = re.fullmatch(r"v(\d+)(?:\.\d+)*", ref)
        assert major is not None, f"{step['uses']}: pin a major version tag"
        assert int(major.group(1)) >= NODE24_MAJORS[action], f"{step['uses']} runs on a deprecated Node version"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_push_and_pull_request_are_filtered_by_path(path: Path) -> None:
    triggers = _triggers(_load(path))
    assert triggers["push"]["branches"] == ["main"]
    for event in ("push", "pull_request"):
        paths = set(triggers[event]["paths"])
        assert paths >= COMMON_PATHS, event
        assert paths & {".github/workflows/**", f".github/workflows/{path.name}"}, f"{event}: the workflow itself"


def test_ci_runs_check_test_and_the_container_smoke_test() -> None:
    runs = _runs(_load(ROOT / ".github" / "workflows" / "ci.yml"))
    commands = ("make check", "make workflows-lint", "bash .ci/run packages", "make test", "bash .ci/run containers")
    for command in commands:
        assert command in runs, command


def test_bench_gates_pull_requests_and_keeps_the_history_of_main() -> None:
    jobs = _load(ROOT / ".github" / "workflows" / "bench.yml")["jobs"]
    gate, history = jobs["gate"], jobs["history"]
    assert gate["if"] == "github.event_name == 'pull_request'"
    gate_step = next(step for step in gate["steps"] if "make bench-ci" in str(step.get("run", "")))
    assert gate_step["env"]["BASE"] == "${{ github.event.pull_request.base.sha }}"
    assert 'BASE="$BASE"' in gate_step["run"] and "CHECK_ARGS=--summary" in gate_step["run"]
    assert history["if"] == "github.event_name != 'pull_request'"
    assert "make bench-ci BASE=" in _runs({"jobs": {"job": history}})
    for job in (gate, history):
        checkout = next(step for step in job["steps"] if str(step.get("uses", "")).startswith("actions/checkout@"))
        assert checkout["with"]["fetch-depth"] == 0  # the base commit too
        caches = [step for step in job["steps"] if str(step.get("uses", "")).startswith("actions/cache@")]
        assert caches and caches[0]["with"]["path"] == "~/.cache/servingbench"
    for job in (gate, history):
        uploads = [step for step in job["steps"] if str(step.get("uses", "")).startswith("actions/upload-artifact@")]
        assert uploads and all(step["if"] == "always()" for step in uploads)


def test_make_targets_called_by_the_workflows_exist() -> None:
    called = {match for path in WORKFLOWS for match in MAKE_CALL.findall(_runs(_load(path)))}
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    defined = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, flags=re.MULTILINE))
    assert called - defined <= PENDING_TARGETS
