"""Server process lifecycle with a tiny stand-in server: ready, pinned, failing early, never ready, always reaped."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest

from servingbench.harness.processes import (
    ServerStartError,
    free_port,
    log_tail,
    running_server,
    wait_until_ready,
)
from servingbench.harness.resources import ServerMonitor, sample_memory, tree_cpu_seconds

# slow: each test starts and reaps real processes (make test runs it; make test-fast leaves it out)
pytestmark = pytest.mark.slow

TINY_SERVER = Path(__file__).with_name("tiny_server.py")
STARTUP_TIMEOUT_S = 30.0
NOT_READY_TIMEOUT_S = 1.0


def tiny_argv(port: int, *flags: str) -> list[str]:
    return [sys.executable, str(TINY_SERVER), str(port), *flags]


def gone(pids: Sequence[int]) -> bool:
    """No process left, or only zombies waiting for an init that is not ours."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def tree_pids(pid: int) -> list[int]:
    root = psutil.Process(pid)
    return [pid, *(child.pid for child in root.children(recursive=True))]


def test_server_starts_answers_and_is_reaped_with_its_children(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "logs" / "server.log"
    with running_server(
        tiny_argv(port, "--child"), os.environ, port=port, log_path=log, startup_timeout_s=STARTUP_TIMEOUT_S
    ) as server:
        assert server.base_url == f"http://127.0.0.1:{port}"
        assert server.exit_code() is None
        pids = tree_pids(server.pid)
        assert len(pids) == 2  # the server and the child it forked
    assert gone(pids)
    assert server.exit_code() is not None
    assert "tiny server starting" in log.read_text()


def test_server_is_pinned_to_the_given_cpus(tmp_path: Path) -> None:
    cpu = min(os.sched_getaffinity(0))
    port = free_port()
    with running_server(
        tiny_argv(port, "--child"),
        os.environ,
        port=port,
        log_path=tmp_path / "server.log",
        cpus=[cpu],
        startup_timeout_s=STARTUP_TIMEOUT_S,
    ) as server:
        for pid in tree_pids(server.pid):
            assert psutil.Process(pid).cpu_affinity() == [cpu]


def test_early_exit_reports_code_and_log_tail(tmp_path: Path) -> None:
    port = free_port()
    with (
        pytest.raises(ServerStartError) as info,
        running_server(
            tiny_argv(port, "--exit-before-ready", "3"),
            os.environ,
            port=port,
            log_path=tmp_path / "server.log",
            startup_timeout_s=STARTUP_TIMEOUT_S,
        ),
    ):
        pytest.fail("the server must not get ready")
    assert info.value.reason == "exited with code 3 before it was ready"
    assert "bad model 'nope'" in info.value.log_tail


def test_never_ready_times_out_and_is_reaped(tmp_path: Path) -> None:
    port = free_port()
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    with (
        pytest.raises(ServerStartError, match=r"not ready at .*/healthz within 1 s"),
        running_server(
            tiny_argv(port, "--never-ready"),
            os.environ,
            port=port,
            log_path=tmp_path / "server.log",
            startup_timeout_s=NOT_READY_TIMEOUT_S,
        ),
    ):
        pytest.fail("the server must not get ready")
    after = [child.pid for child in psutil.Process().children(recursive=True) if child.pid not in before]
    assert gone(after)


def test_keyboard_interrupt_leaves_no_orphan(tmp_path: Path) -> None:
    port = free_port()
    pids: list[int] = []
    with (
        pytest.raises(KeyboardInterrupt),
        running_server(
            tiny_argv(port, "--child"),
            os.environ,
            port=port,
            log_path=tmp_path / "server.log",
            startup_timeout_s=STARTUP_TIMEOUT_S,
        ) as server,
    ):
        pids.extend(tree_pids(server.pid))
        raise KeyboardInterrupt
    assert len(pids) == 2
    assert gone(pids)


def test_wait_until_ready_without_a_process_times_out() -> None:
    with pytest.raises(ServerStartError, match="not ready"):
        wait_until_ready(f"http://127.0.0.1:{free_port()}/healthz", timeout_s=0.2)


def test_log_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("\n".join(f"line {i}" for i in range(100)))
    assert log_tail(path, 3) == "line 97\nline 98\nline 99"
    assert log_tail(tmp_path / "missing") == ""


def test_resources_of_a_running_tree(tmp_path: Path) -> None:
    port = free_port()
    with running_server(
        tiny_argv(port, "--child"), os.environ, port=port, log_path=tmp_path / "s.log", startup_timeout_s=30.0
    ) as server:
        monitor = ServerMonitor(server.pid)
        assert monitor.usage is None
        monitor.window_start()
        monitor.window_end()
        usage = monitor.usage
        assert usage is not None and usage.cpu_s >= 0.0
        assert usage.memory is not None
        assert usage.memory.rss_mb_total > 0
        assert len(usage.memory.rss_mb_per_worker) == 1  # the forked child counts as the worker
        assert tree_cpu_seconds(server.pid) > 0
        pid = server.pid
    assert sample_memory(pid) is None
    assert tree_cpu_seconds(pid) == 0.0
