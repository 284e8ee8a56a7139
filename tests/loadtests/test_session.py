"""A load session: long-lived Locust processes serving run after run, against real servers and the stand-in.

Everything asserted is what the code decides (which end closed a window, how many arrivals a computed schedule puts
in it, which bodies went out, every request recorded once, no process left), never how fast anything ran.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import pytest

from servingbench.harness.loadgen import LoadgenError, LoadgenTimeout, LoadResult, LoadSession
from servingbench.harness.processes import LOCALHOST, ServerProcess, free_port, running_server
from servingbench.loadtests import LoadSpec
from servingbench.loadtests.protocol import LOCUST_FAILURES_CSV, LOCUST_STATS_CSV
from servingbench.servers import ServerConfig, launch_command

from .conftest import GOOD_BODY, REFUSED_BODY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

LOAD_CPUS = [max(os.sched_getaffinity(0))]
SERVER_MODEL = "synthetic:sleep_ms=1"
ROW = b'{"features": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}'
"""One row of the 10 features every synthetic model takes."""
CAP_S = 30.0
"""A cap no target below is anywhere near: a window these tests size by count ends at its target."""
HUNG_TIMEOUT_S = 5.0
"""The deadline of a run whose load process is frozen: the run itself needs well under a second of it."""
RUN_FILES_MAX_BYTES = 16_384
"""A run's own files are Locust's two CSVs: a few KB, never its 1 MB HTML report."""


def _locust_pids() -> set[int]:
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "locust" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def _gone(pids: list[int]) -> bool:
    """Whether none of `pids` is running any more (they were reaped: not even a zombie is left)."""
    return not any(psutil.pid_exists(pid) for pid in pids)


def _spec(base_url: str, **changes: Any) -> LoadSpec:
    fields: dict[str, Any] = {
        "base_url": base_url,
        "endpoint": "/predict",
        "payloads": (GOOD_BODY,),
        "kind": "closed",
        "users": 2,
        "warmup_s": 0.2,
        "duration_s": CAP_S,
        "target_requests": 100,
        "seed": 1,
    }
    return LoadSpec(**{**fields, **changes})


def _check_recorded_once(result: LoadResult) -> None:
    assert result.requests > 0
    assert result.histograms.total.get_total_count() == result.requests
    assert sum(w["requests"] for w in result.workers.values()) == result.requests
    assert sum(w["errors"] for w in result.workers.values()) == result.errors
    assert all(w["recorded"] == w["requests"] for w in result.workers.values())


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadSession]:
    """One local load process for the module's runs; none may be left once it closes."""
    with LoadSession(tmp_path_factory.mktemp("session"), cpus=LOAD_CPUS) as load:
        yield load
    assert not _locust_pids()


# ---- several runs, several servers ----


def _start_server(framework: str, server: str, log: Path, stack: ExitStack) -> ServerProcess:
    port = free_port()
    command = launch_command(ServerConfig(framework, server), host=LOCALHOST, port=port, model=SERVER_MODEL)
    return stack.enter_context(running_server(command.argv, command.env, port=port, log_path=log))


def test_one_session_serves_runs_against_two_real_servers(session: LoadSession, tmp_path: Path) -> None:
    """Closed then open, on two servers; then, one server stopped, each run still goes where its spec says: the
    stopped one's run fails whole, the live one's does not (so the session follows base_url run by run)."""
    pids = session.pids
    with ExitStack() as flask_stack:
        with ExitStack() as fastapi_stack:
            fastapi = _start_server("fastapi", "uvicorn", tmp_path / "fastapi.log", fastapi_stack)
            flask = _start_server("flask", "gunicorn-sync", tmp_path / "flask.log", flask_stack)
            closed = session.run(_spec(fastapi.base_url, payloads=(ROW,)), out_dir=tmp_path / "r1")
            opened = session.run(
                _spec(flask.base_url, payloads=(ROW,), kind="open", rate=100.0, users=50, target_requests=50),
                out_dir=tmp_path / "r2",
            )
        dead = session.run(_spec(fastapi.base_url, payloads=(ROW,)), out_dir=tmp_path / "r3")
        alive = session.run(_spec(flask.base_url, payloads=(ROW,)), out_dir=tmp_path / "r4")
    for result in (closed, opened, dead, alive):
        _check_recorded_once(result)
    assert closed.errors == 0 and closed.open_loop is None and closed.ended_by == "target"
    assert opened.errors == 0 and opened.open_loop is not None and opened.ended_by == "target"
    assert dead.errors == dead.requests and set(dead.errors_by_kind) == {"ConnectionRefusedError"}
    assert alive.errors == 0
    assert session.pids == pids  # the same processes served every run
    assert closed.histograms.predict.get_total_count() == closed.requests  # the real servers' Server-Timing


# ---- the window: by count within a cap ----


def test_a_closed_loop_window_ends_at_its_target(session: LoadSession, standin_url: str, tmp_path: Path) -> None:
    result = session.run(_spec(standin_url, target_requests=50), out_dir=tmp_path)
    _check_recorded_once(result)
    assert (result.ended_by, result.target_requests) == ("target", 50)
    assert result.requests >= 50  # every request counted towards the target started inside the window


def test_a_closed_loop_window_that_misses_its_target_records_the_cap(
    session: LoadSession, standin_url: str, tmp_path: Path
) -> None:
    result = session.run(_spec(standin_url, target_requests=10**9, duration_s=1.0), out_dir=tmp_path)
    _check_recorded_once(result)
    assert result.ended_by == "cap"
    assert result.duration_s == pytest.approx(1.0, abs=1e-6)
    assert result.to_json()["duration_s"] == 1.0


@pytest.mark.parametrize(
    ("rate", "target", "cap_s", "ended_by", "window_s"),
    [(100.0, 50, CAP_S, "target", 0.5), (20.0, 1000, 1.0, "cap", 1.0)],
)
def test_an_open_loop_window_is_sized_from_its_rate(
    session: LoadSession,
    standin_url: str,
    tmp_path: Path,
    rate: float,
    target: int,
    cap_s: float,
    ended_by: str,
    window_s: float,
) -> None:
    load = {"kind": "open", "rate": rate, "arrivals": "constant", "users": 50}
    result = session.run(_spec(standin_url, target_requests=target, duration_s=cap_s, **load), out_dir=tmp_path)
    _check_recorded_once(result)
    assert result.ended_by == ended_by
    assert result.duration_s == pytest.approx(window_s, abs=1e-6)
    assert result.open_loop is not None and result.open_loop.dropped == 0
    # Constant spacing on a grid anchored at the window's start: the window holds exactly rate x length arrivals,
    # however late the generator sent them.
    assert result.open_loop.scheduled == result.requests == round(rate * window_s)


# ---- bodies ----


@pytest.mark.parametrize("kind", ["closed", "open"])
def test_bodies_cycle_in_their_seeded_order(session: LoadSession, standin_url: str, tmp_path: Path, kind: str) -> None:
    """Two bodies, one refused: a single sender cycles them strictly in turn, so any stretch of its requests (the
    window) holds as many of one as of the other, give or take one."""
    load: dict[str, Any] = {"users": 1} if kind == "closed" else {"rate": 100.0, "users": 50}
    spec = _spec(standin_url, kind=kind, payloads=(GOOD_BODY, REFUSED_BODY), target_requests=60, **load)
    result = session.run(spec, out_dir=tmp_path)
    _check_recorded_once(result)
    refused = result.errors_by_kind.get("HTTP 422", 0)
    assert result.errors == refused > 0
    assert abs((result.requests - refused) - refused) <= 1


# ---- files ----


def test_a_runs_directory_holds_only_locusts_small_csvs(session: LoadSession, standin_url: str, tmp_path: Path) -> None:
    result = session.run(_spec(standin_url, target_requests=20), out_dir=tmp_path / "run")
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == sorted([LOCUST_STATS_CSV, LOCUST_FAILURES_CSV])
    assert sum(path.stat().st_size for path in (tmp_path / "run").iterdir()) < RUN_FILES_MAX_BYTES
    assert result.artifacts["locust_csv"] == tmp_path / "run" / LOCUST_STATS_CSV
    assert result.artifacts["locust_local_log"] == session.session_dir / "locust-local.log"
    assert "locust_html" not in result.artifacts


# ---- workers ----


def test_a_distributed_session_ends_a_closed_loop_window_at_its_target(standin_url: str, tmp_path: Path) -> None:
    with LoadSession(tmp_path / "session", cpus=LOAD_CPUS, workers=2) as load:
        pids = load.pids
        assert len(load.worker_ids) == 2
        closed = load.run(_spec(standin_url, users=4, target_requests=200), out_dir=tmp_path / "closed")
        opened = load.run(
            _spec(standin_url, kind="open", rate=100.0, arrivals="constant", users=50, target_requests=50),
            out_dir=tmp_path / "open",
        )
    assert _gone(pids)
    for result in (closed, opened):
        _check_recorded_once(result)
        assert set(result.workers) == set(load.worker_ids)
    assert closed.ended_by == "target" and closed.requests >= 200
    assert opened.ended_by == "target" and opened.open_loop is not None and opened.open_loop.scheduled == 50


# ---- failures and clean-up ----


def _raise(exc: BaseException) -> Callable[[], None]:
    def callback() -> None:
        raise exc

    return callback


@pytest.mark.parametrize("workers", [1, 2], ids=["local", "master+2workers"])
def test_ctrl_c_mid_run_leaves_no_process(standin_url: str, tmp_path: Path, workers: int) -> None:
    with pytest.raises(KeyboardInterrupt), LoadSession(tmp_path, cpus=LOAD_CPUS, workers=workers) as load:
        pids = load.pids
        assert len(pids) == (1 if workers == 1 else 1 + workers)
        load.run(_spec(standin_url), out_dir=tmp_path / "run", on_window_start=_raise(KeyboardInterrupt()))
    assert _gone(pids)


def test_a_failed_run_stops_the_processes_and_the_next_run_restarts_them(standin_url: str, tmp_path: Path) -> None:
    with LoadSession(tmp_path, cpus=LOAD_CPUS) as load:
        first = load.pids
        with pytest.raises(RuntimeError, match="boom"):
            load.run(_spec(standin_url), out_dir=tmp_path / "r1", on_window_start=_raise(RuntimeError("boom")))
        assert load.pids == [] and _gone(first)
        result = load.run(_spec(standin_url, target_requests=20), out_dir=tmp_path / "r2")
        assert load.restarts == 1 and load.pids != first
        second = load.pids
    _check_recorded_once(result)
    assert _gone(second)


@pytest.mark.parametrize(("workers", "victim"), [(1, 0), (2, 0), (2, 1)], ids=["local", "master", "worker"])
def test_a_killed_load_process_fails_the_run_at_once(
    standin_url: str, tmp_path: Path, workers: int, victim: int
) -> None:
    with LoadSession(tmp_path, cpus=LOAD_CPUS, workers=workers) as load:
        pids = load.pids
        kill = _signal(pids[victim], signal.SIGKILL)
        with pytest.raises(LoadgenError) as failure:
            load.run(_spec(standin_url), out_dir=tmp_path / "run", on_window_start=kill, timeout_s=CAP_S * 4)
    assert not isinstance(failure.value, LoadgenTimeout)
    assert f"exited with code {-signal.SIGKILL}" in str(failure.value) or "event stream" in str(failure.value)
    assert _gone(pids)


def test_a_hung_load_process_times_the_run_out_and_is_killed(standin_url: str, tmp_path: Path) -> None:
    with LoadSession(tmp_path, cpus=LOAD_CPUS) as load:
        pids = load.pids
        freeze = _signal(pids[0], signal.SIGSTOP)
        spec = _spec(standin_url, target_requests=None, duration_s=0.5)
        with pytest.raises(LoadgenTimeout, match="deadline"):
            load.run(spec, out_dir=tmp_path / "run", on_window_start=freeze, timeout_s=HUNG_TIMEOUT_S)
        assert _gone(pids)  # stopped processes are killed too (SIGKILL needs no cooperation)


def _signal(pid: int, sig: signal.Signals) -> Callable[[], None]:
    def callback() -> None:
        os.kill(pid, sig)

    return callback
