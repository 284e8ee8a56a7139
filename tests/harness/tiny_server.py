"""A stand-in server for the harness tests: ``GET /healthz`` and ``GET /model`` on 127.0.0.1:PORT.

Flags make it misbehave the ways real servers do: exit before binding with a one-line reason, never get
ready, or fork a child (a gunicorn-like worker) that must be reaped with it.
"""

from __future__ import annotations

import argparse
import http.server
import json
import subprocess
import sys

N_FEATURES = 10
CHILD_SLEEP_S = 600
HTTP_OK = 200
HTTP_UNAVAILABLE = 503


class Handler(http.server.BaseHTTPRequestHandler):
    ready = True

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(HTTP_OK if self.ready else HTTP_UNAVAILABLE, {"status": "ok"})
        elif self.path == "/model":
            self._reply(HTTP_OK, {"name": "tiny", "n_features": N_FEATURES})
        else:
            self._reply(404, {"title": "Not Found"})

    def _reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--exit-before-ready", type=int, default=None, metavar="CODE")
    parser.add_argument("--never-ready", action="store_true")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    print("tiny server starting", flush=True)
    if args.exit_before_ready is not None:
        print("tiny server: bad model 'nope': no such file", file=sys.stderr, flush=True)
        sys.exit(args.exit_before_ready)
    if args.child:
        subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({CHILD_SLEEP_S})"])
    Handler.ready = not args.never_ready
    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
