"""The drain check between runs: a server is idle only when its CPU is quiet and it answers /healthz in time."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servingbench.harness.servers import wait_until_idle

# slow: each test watches a real process burn or idle (make test runs it; make test-fast leaves it out)
pytestmark = pytest.mark.slow

BURN_AND_REST = """
import pathlib, sys, time
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    pass
pathlib.Path(sys.argv[1]).write_text("rested")
time.sleep(60)
"""


class _Health(http.server.BaseHTTPRequestHandler):
    slow_answers = 0  # this many answers come after SLOW_ANSWER_S: a server still working off its queue
    answered = 0

    def do_GET(self) -> None:
        type(self).answered += 1
        if type(self).answered <= type(self).slow_answers:
            time.sleep(SLOW_ANSWER_S)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


SLOW_ANSWER_S = 0.2  # over the 50 ms idle threshold


@pytest.fixture
def health() -> Iterator[tuple[str, type[_Health]]]:
    handler = type("Health", (_Health,), {"slow_answers": 0, "answered": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_still_burning_cpu_is_not_idle_until_it_stops(
    tmp_path: Path, health: tuple[str, type[_Health]]
) -> None:
    """An async server answers /healthz between queued requests: busy CPU is not idle, whatever the probe says."""
    flag = tmp_path / "rested"
    burner = subprocess.Popen([sys.executable, "-c", BURN_AND_REST, str(flag), "0.6"])
    try:
        assert wait_until_idle(health[0], pid=burner.pid, timeout_s=30.0)
        assert flag.exists()  # it reported idle only after the busy loop was over
    finally:
        burner.kill()
        burner.wait()


def test_a_quiet_server_that_still_answers_slowly_is_not_idle(
    tmp_path: Path, health: tuple[str, type[_Health]]
) -> None:
    """A sync worker working off a queue of sleeping requests burns no CPU: its slow probe answers tell."""
    url, handler = health
    handler.slow_answers = 3
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert wait_until_idle(url, pid=sleeper.pid, timeout_s=30.0)
        assert handler.answered >= handler.slow_answers + 1  # never idle while the answers are slow
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_server_that_never_stops_working_is_reported_not_idle(
    tmp_path: Path, health: tuple[str, type[_Health]]
) -> None:
    burner = subprocess.Popen([sys.executable, "-c", BURN_AND_REST, str(tmp_path / "rested"), "60"])
    try:
        assert not wait_until_idle(health[0], pid=burner.pid, timeout_s=0.5)
    finally:
        burner.kill()
        burner.wait()
