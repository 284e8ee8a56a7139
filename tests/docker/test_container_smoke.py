"""The container stack for real: ``make compose-bench`` on ``--quick`` builds the image and runs both servers, the
benchmark runner and one Locust worker under this machine's engine (Docker Compose v2, or podman-compose), then the
bundle it leaves on the host is checked.

Opt-in, because it takes minutes and needs an engine: ``SERVINGBENCH_CONTAINER_SMOKE=1``, which ``make compose-smoke``
and ``.ci/run`` set. The compose command is the Makefile's choice, or ``COMPOSE=...`` from the environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT

OPT_IN = "SERVINGBENCH_CONTAINER_SMOKE"
#: Build (a first one downloads the pinned wheels) plus the --quick run, on a busy 2-core machine.
SMOKE_TIMEOUT_S = 1500
LIST_TIMEOUT_S = 60.0
PROJECT = "sb-smoke"
SERVER_CPUS = "0"
LOAD_CPUS = "1"
LOCUST_WORKERS = 1
TARGETS = {"target-fastapi-8000": "http://fastapi:8000", "target-flask-8000": "http://flask:8000"}
LOG_TAIL_LINES = 60
# Compose's project label, per engine: containers left behind by the stack would carry it.
PROJECT_LABELS = {"docker": "com.docker.compose.project", "podman": "io.podman.compose.project"}

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(SMOKE_TIMEOUT_S + 60)]


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the stack once for the module and return the results directory; a non-zero exit fails with the log's tail."""
    if os.environ.get(OPT_IN) != "1":
        pytest.skip(f"container smoke test: set {OPT_IN}=1 (make compose-smoke) on a machine with Docker or podman")
    if not {int(SERVER_CPUS), int(LOAD_CPUS)} <= os.sched_getaffinity(0):
        pytest.skip(f"needs CPUs {SERVER_CPUS} (servers) and {LOAD_CPUS} (load)")
    results = tmp_path_factory.mktemp("compose-results")
    log = results.parent / "compose-bench.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("SB_")}
    env.update(COMPOSE_PROJECT_NAME=PROJECT, SB_SERVER_CPUS=SERVER_CPUS, SB_LOAD_CPUS=LOAD_CPUS)
    argv = ["make", "--no-print-directory", "-C", str(ROOT), "compose-bench", "COMPOSE_BENCH_ARGS=--quick"]
    argv += [f"LOAD_WORKERS={LOCUST_WORKERS}", f"COMPOSE_RESULTS={results}"]
    with log.open("wb") as handle:
        done = subprocess.run(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, timeout=SMOKE_TIMEOUT_S
        )
    print(f"compose-bench log: {log}")
    if done.returncode != 0:
        pytest.fail(f"make compose-bench exited {done.returncode}; last lines of {log}:\n{_tail(log)}")
    return results


@pytest.fixture(scope="module")
def bundle(stack: Path) -> Path:
    latest = stack / "latest"
    assert latest.is_symlink(), f"no bundle in {stack}"
    return latest.resolve()


@pytest.fixture(scope="module")
def results(bundle: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((bundle / "results.json").read_text(encoding="utf-8"))
    return document


def test_the_stack_exits_0_with_a_complete_bundle(results: dict[str, Any]) -> None:
    assert results["format"] == "servingbench-results"
    assert results["complete"] is True and results["finished"]
    assert results["preset"] == "quick"


def test_both_servers_were_measured_by_the_remote_worker(results: dict[str, Any]) -> None:
    assert {name: entry["url"] for name, entry in results["configs"].items()} == TARGETS
    runs = results["runs"]
    assert {run["config"] for run in runs} == set(TARGETS)
    assert all(run["status"] == "ok" for run in runs), [(r["id"], r["invalid_reason"]) for r in runs]
    # No local Locust worker in the runner: every request came from the worker container.
    environment = results["environment"]
    assert (environment["load_workers"], environment["remote_load_workers"]) == (0, LOCUST_WORKERS)
    assert all(run["requests"] > 0 for run in runs)


def test_runner_ran_on_the_load_cores_only(results: dict[str, Any]) -> None:
    environment = results["environment"]
    assert environment["affinity"] == [int(LOAD_CPUS)]
    assert environment["load_cpus"] == [int(LOAD_CPUS)]
    assert environment["shared_cores"] is False
    assert not any(rule.startswith("VIOLATED") for rule in results["fairness"])


def test_report_is_rendered(bundle: Path) -> None:
    page = (bundle / "index.html").read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html")
    for url in TARGETS.values():
        assert url in page


def test_no_container_is_left_behind(stack: Path) -> None:
    for engine, label in PROJECT_LABELS.items():
        if shutil.which(engine) is None:
            continue
        listing = subprocess.run(
            [engine, "ps", "--all", "--quiet", "--filter", f"label={label}={PROJECT}"],
            capture_output=True,
            text=True,
            timeout=LIST_TIMEOUT_S,
            check=False,
        )
        if listing.returncode == 0:  # an engine that is installed but not running has nothing left either
            assert listing.stdout.split() == [], f"{engine}: containers of {PROJECT} still exist"
