"""One real A/B check: a base commit built into its own environment, real servers for base and head, real load.

The base is a commit of a throwaway repository holding a copy of this project whose FastAPI adapter prints a marker
when imported; the head is that repository's working tree, where an uncommitted edit prints another marker. So the
test can tell which code each arm served. Two repetitions are fewer than a verdict needs: the
status is "no verdict" whatever the machine's speed; the test asserts that, the files, and which code ran where,
never a timing.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import psutil
import pytest

from servingbench.gate import EXIT_NO_VERDICT, CheckRequest
from servingbench.gate.command import run_check

from .gitrepo import PROJECT, commit_files

MARKER = "servingbench-test-base-marker"
HEAD_MARKER = "servingbench-test-head-marker"
TINY_PLAN = """
seed = 3
warmup_s = 0.2
duration_s = 0.5
repetitions = 2
min_requests = 5
startup_timeout_s = 60.0
[configs.fastapi-uvicorn]
framework = "fastapi"
server = "uvicorn"
[models.sleep]
spec = "synthetic:sleep_ms=2"
scenarios = ["single"]
[scenarios.single]
endpoint = "/predict"
concurrency = [2]
"""


ADAPTER = "src/servingbench/servers/fastapi_app.py"


def _marked(marker: str) -> str:
    return (PROJECT / ADAPTER).read_text() + f'\nprint("{marker}", flush=True)\n'


def _base_repo(repo: Path) -> str:
    """A commit of this project with a marker printed by the base's FastAPI adapter at import; the working tree then
    prints the head's marker instead (not committed: the head serves the checkout as it is)."""
    copies = {"src": PROJECT / "src", "requirements.lock": PROJECT / "requirements.lock"}
    commit_files(repo, {}, copies)
    commit = commit_files(repo, {ADAPTER: _marked(MARKER), "ci.toml": TINY_PLAN})
    (repo / ADAPTER).write_text(_marked(HEAD_MARKER))
    return commit


def _server_log(bundle: Path, config: str) -> str:
    document = json.loads((bundle / "results.json").read_text())
    session = next(str(item["id"]) for item in document["sessions"] if item["config"] == config)
    return (bundle / "servers" / session / "server.log").read_text()


@pytest.mark.slow
def test_a_real_ab_check_serves_each_arm_its_own_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    commit = _base_repo(repo)
    monkeypatch.chdir(repo)
    out = tmp_path / "ci"
    request = CheckRequest(
        base=commit[:12],
        plan=repo / "ci.toml",
        out=out,
        cache=tmp_path / "cache",
        report=False,
        allow_shared_cores=len(os.sched_getaffinity(0)) < 2,
    )
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run_check(request, stdout=stdout, stderr=stderr)

    assert code == EXIT_NO_VERDICT, stdout.getvalue() + stderr.getvalue()
    doc = json.loads((out / "check" / "check.json").read_text())
    assert doc["status"] == "no verdict" and "(need 5)" in doc["reason"]
    assert doc["context"]["base"]["commit"] == commit
    assert {row["metric"] for row in doc["rows"]} == {"rps", "p50", "p99", "cpu_us_per_request"}
    assert {row["verdict"] for row in doc["rows"]} == {"too few"}
    assert (out / "check" / "check.md").is_file() and (out / "check" / "check.html").is_file()

    bundle = Path(doc["context"]["bundle"])
    runs = json.loads((bundle / "results.json").read_text())["runs"]
    assert sorted((run["config"], run["repetition"]) for run in runs) == [
        ("base", 0), ("base", 1), ("head", 0), ("head", 1)
    ]  # fmt: skip
    assert all(run["status"] == "ok" and run["requests"] > 0 for run in runs)
    base_log, head_log = _server_log(bundle, "base"), _server_log(bundle, "head")
    assert MARKER in base_log and HEAD_MARKER not in base_log
    assert HEAD_MARKER in head_log and MARKER not in head_log
    assert not psutil.Process().children(recursive=True)
