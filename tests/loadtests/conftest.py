"""A stand-in model server for load tests: stdlib HTTP on loopback, a known sleep, a Server-Timing header."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

STANDIN_SLEEP_S = 0.002
"""Seconds the stand-in 'predicts' for."""
STANDIN_SERVER_TIMING = "validate;dur=0.012, predict;dur=2.034"
FAILING_PATH = "/predict/fail"
"""Answers 503, for error accounting."""
GOOD_BODY = b'{"features": [1.0, 2.0, 3.0]}'
REFUSED_BODY = b'{"features": "refused"}'
"""A body the stand-in answers with 422 (it looks for the word), to see which bodies were sent."""
REFUSED_MARKER = b"refused"


class _StandInHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn and gthread do
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def do_POST(self) -> None:
        request = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(STANDIN_SLEEP_S)
        status, body = 200, b'{"prediction":1}'
        if self.path == FAILING_PATH:
            status, body = 503, b'{"title":"unavailable"}'
        elif REFUSED_MARKER in request:
            status, body = 422, b'{"title":"refused"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Server-Timing", STANDIN_SERVER_TIMING)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest would show every request."""


class _StandInServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: a load process killed mid-request (as tests do) resets its connection; that is no server error."""


@pytest.fixture
def standin_url() -> Iterator[str]:
    """Base URL of a stand-in server on 127.0.0.1 (ephemeral port), shut down after the test."""
    server = _StandInServer(("127.0.0.1", 0), _StandInHandler)
    thread = threading.Thread(target=server.serve_forever, name="standin-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
