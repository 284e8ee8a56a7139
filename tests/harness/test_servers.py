"""The drain check between runs: a server is idle only when its CPU is quiet, no request waits at its socket, and it
answers /healthz in time."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servingbench.harness.servers import socket_backlog, wait_until_idle

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
        assert wait_until_idle(health[0], pid=burner.pid, timeout_s=30.0).idle
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
        assert wait_until_idle(url, pid=sleeper.pid, timeout_s=30.0).idle
        assert handler.answered >= handler.slow_answers + 1  # never idle while the answers are slow
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_server_that_never_stops_working_is_reported_not_idle(
    tmp_path: Path, health: tuple[str, type[_Health]]
) -> None:
    burner = subprocess.Popen([sys.executable, "-c", BURN_AND_REST, str(tmp_path / "rested"), "60"])
    try:
        drain = wait_until_idle(health[0], pid=burner.pid, timeout_s=2.0)
        assert not drain.idle and drain.waiting_for == "its CPU"
    finally:
        burner.kill()
        burner.wait()


# --- the socket half: requests still waiting at the server's socket ------------------------------------------------

TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def _row(
    local_port: int,
    state: str,
    rx_queue: int,
    remote_port: int = 40000,
    inode: int = 12345,
    address: str = "0100007F",  # 127.0.0.1 as the kernel prints it
) -> str:
    return (
        f"   0: {address}:{local_port:04X} {address}:{remote_port:04X} {state} 00000000:{rx_queue:08X} 00:00000000 "
        f"00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
    )


def test_the_backlog_counts_the_accept_queue_and_unread_requests_of_that_port_only(tmp_path: Path) -> None:
    """Known answer from the kernel's table format: a listening socket's rx_queue is its accept queue; an accepted
    connection with unread bytes is one request more; other ports and read connections do not count."""
    tcp, tcp6 = tmp_path / "tcp", tmp_path / "tcp6"
    tcp.write_text(
        TCP_HEADER
        + _row(8080, "0A", 3, remote_port=0)  # listening, 3 connections in its accept queue
        + _row(8080, "01", 0x1A2)  # accepted, 418 request bytes unread
        + _row(8080, "01", 0)  # accepted, request read (being served, or idle keep-alive)
        + _row(8080, "01", 0x1A2, inode=0)  # in the accept queue (no file yet): counted there already
        + _row(8081, "0A", 99, remote_port=0)  # another server
        + _row(40001, "01", 50, remote_port=8080)  # the client's end of a connection to 8080
        + _row(8080, "08", 1)  # the client closed after its answer: only its FIN is unread, no request
        + _row(8080, "08", 0x1A3)  # the client sent a request, then closed: the server still has it to serve
    )
    tcp6.write_text(TCP_HEADER + _row(8080, "0A", 1, remote_port=0))
    assert socket_backlog(8080, (tcp, tcp6)) == 3 + 1 + 1 + 1
    assert socket_backlog(8081, (tcp, tcp6)) == 99
    assert socket_backlog(8082, (tcp, tcp6)) is None  # nothing listens there: not checked, not "empty"
    assert socket_backlog(8080, (tmp_path / "missing",)) is None


def test_the_backlog_counts_loopback_and_wildcard_listeners_not_another_interfaces(tmp_path: Path) -> None:
    tcp, tcp6 = tmp_path / "tcp", tmp_path / "tcp6"
    tcp.write_text(
        TCP_HEADER
        + _row(8080, "0A", 1, remote_port=0, address="00000000")  # 0.0.0.0
        + _row(8080, "0A", 2, remote_port=0, address="0200007F")  # 127.0.0.2
        + _row(8080, "0A", 40, remote_port=0, address="0A00000F")  # 15.0.0.10: another interface's server
    )
    tcp6.write_text(
        TCP_HEADER
        + _row(8080, "0A", 4, remote_port=0, address="0" * 24 + "01000000")  # ::1
        + _row(8080, "01", 9, address="0" * 16 + "FFFF0000" + "0100007F")  # ::ffff:127.0.0.1, unread
        + _row(8080, "0A", 80, remote_port=0, address="20010DB8" + "0" * 24)  # 2001:db8::, not loopback
    )
    assert socket_backlog(8080, (tcp, tcp6)) == 1 + 2 + 4 + 1


def _until(expected: int, port: int) -> int | None:
    """The backlog once it reads ``expected`` (the kernel updates the queue as the handshake completes), or the
    last value read within 5 s."""
    deadline = time.monotonic() + 5.0
    value = socket_backlog(port)
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.01)
        value = socket_backlog(port)
    return value


def test_the_backlog_of_a_real_listening_socket_follows_its_queue() -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        port = listener.getsockname()[1]
        assert _until(0, port) == 0
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            assert _until(3, port) == 3  # three connections nobody accepted yet
            accepted, _ = listener.accept()
            with accepted:
                clients[0].sendall(b"POST /predict HTTP/1.1\r\n\r\n")
                assert _until(3, port) == 3  # two queued, one accepted with its request unread
                accepted.recv(1024)
                assert _until(2, port) == 2  # read: being served, no longer waiting
        finally:
            for client in clients:
                client.close()


def _close_wait(port: int, client: socket.socket) -> None:
    """Close ``client`` and wait until the server's end of its connection is in CLOSE_WAIT (the FIN has arrived)."""
    client_port = client.getsockname()[1]
    client.close()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(f.rpartition(":")[2], 16) for f in fields[1:3])
            if (local, remote, fields[3]) == (port, client_port, "08"):
                return
        time.sleep(0.01)
    raise AssertionError("the server's end never saw the client's FIN")


def test_a_client_that_closed_waits_only_if_it_left_a_request() -> None:
    """A connection whose client closed shows its FIN as one unread byte: after an answer that is no request (the
    drain's own health check, closed before the server's thread closes its end); a request sent before closing is."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        port = listener.getsockname()[1]
        answered, abandoned = (socket.create_connection(("127.0.0.1", port)) for _ in range(2))
        first, _ = listener.accept()
        second, _ = listener.accept()
        with first, second:
            assert _until(0, port) == 0
            _close_wait(port, answered)
            assert socket_backlog(port) == 0  # only a FIN unread
            abandoned.sendall(b"POST /predict HTTP/1.1\r\n\r\n")
            _close_wait(port, abandoned)
            assert socket_backlog(port) == 1  # the server will still read and serve that request


QUEUE_THEN_SERVE_S = 1.5  # long enough that the first sample sees the queue on a busy machine


def test_requests_waiting_in_the_accept_queue_keep_the_server_from_idle(tmp_path: Path) -> None:
    """A server whose CPU is quiet while connections wait in its accept queue (a sync worker blocked on a sleeping
    model) is not drained until it has taken them; the drain reports how many waited."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health, bind_and_activate=False)
    server.request_queue_size = 16
    server.server_bind()
    server.server_activate()  # listening, but nothing accepts yet
    port = server.server_address[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    for client in clients:
        client.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
    serving = threading.Event()

    def serve_later() -> None:
        time.sleep(QUEUE_THEN_SERVE_S)
        serving.set()
        server.serve_forever()

    thread = threading.Thread(target=serve_later, daemon=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _until(4, port) == 4
        thread.start()
        drain = wait_until_idle(f"http://127.0.0.1:{port}", pid=sleeper.pid, timeout_s=30.0)
        assert drain.idle and serving.is_set()  # idle only once the queue was being taken
        assert drain.backlog is not None and drain.backlog >= 4
        assert socket_backlog(port) == 0
    finally:
        sleeper.kill()
        sleeper.wait()
        for client in clients:
            client.close()
        if thread.is_alive():
            server.shutdown()
        server.server_close()


def test_a_queue_nobody_takes_is_reported_as_what_the_drain_waited_for() -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        try:
            assert _until(1, port) == 1
            drain = wait_until_idle(f"http://127.0.0.1:{port}", timeout_s=1.0)
            assert not drain.idle and drain.backlog == 1
            assert drain.waiting_for == "1 request(s) waiting at its socket"  # even if no later sample was taken
        finally:
            client.close()


def test_a_target_on_another_host_is_judged_by_its_probe_alone(health: tuple[str, type[_Health]]) -> None:
    """No socket table shows another machine's queue: the drain neither waits for one nor claims it was empty."""
    url = health[0].replace("127.0.0.1", "localhost")
    assert wait_until_idle(url).backlog == 0  # loopback by name: checked
    other = wait_until_idle("http://192.0.2.1:9", timeout_s=0.3)  # TEST-NET-1: nothing answers
    assert not other.idle and other.backlog is None


def test_a_drain_out_of_time_before_any_sample_still_says_what_it_waited_for(
    health: tuple[str, type[_Health]],
) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        drain = wait_until_idle(health[0], pid=sleeper.pid, timeout_s=0.0)
        assert not drain.idle and drain.waiting_for == "2 quiet samples in a row"
    finally:
        sleeper.kill()
        sleeper.wait()
