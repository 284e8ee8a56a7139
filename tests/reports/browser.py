"""A minimal headless-Chromium driver over the DevTools protocol (websocket-client), for the browser tests.

Chromium listens on a port it picks (``--remote-debugging-port=0``) and writes it to ``DevToolsActivePort``
in the fresh user-data-dir; we poll for that file with a deadline, never a bare sleep, and always kill the
browser's process group on exit.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)
STARTUP_DEADLINE_S = 60.0
CALL_DEADLINE_S = 60.0
POLL_INTERVAL_S = 0.05
VIEWPORT = (1400, 1000)


class BrowserError(AssertionError):
    """Chromium could not be started or did not answer in time."""


@dataclass
class Page:
    """One tab attached through a flat DevTools session; ``events`` keeps every event seen so far."""

    connection: websocket.WebSocket
    session_id: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    _next_id: int = 0

    def _receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.connection.recv())
        return message

    def call(self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False) -> dict[str, Any]:
        """Send one command and wait for its answer; raise on a protocol error."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if not browser:
            message["sessionId"] = self.session_id
        self.connection.send(json.dumps(message))
        deadline = time.monotonic() + CALL_DEADLINE_S
        while time.monotonic() < deadline:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)
        raise BrowserError(f"no answer to {method} within {CALL_DEADLINE_S} s")

    def wait_for_event(self, method: str) -> dict[str, Any]:
        """Return the first event named ``method`` (already seen or next to arrive)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + CALL_DEADLINE_S
        while time.monotonic() < deadline:
            event = self._receive()
            self.events.append(event)
            if event.get("method") == method:
                return event
        raise BrowserError(f"no {method} event within {CALL_DEADLINE_S} s")

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"evaluation failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        """A PNG of the page (or of ``clip`` in document CSS pixels), beyond the viewport if needed."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", params)["data"])

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        errors: list[str] = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(json.dumps(params.get("args")))
            elif method == "Runtime.exceptionThrown":
                errors.append(json.dumps(params.get("exceptionDetails")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                errors.append(json.dumps(params["entry"]))
        return errors

    def requested_urls(self) -> list[str]:
        """Every URL the page asked the network stack for."""
        return [
            str(event["params"]["request"]["url"])
            for event in self.events
            if event.get("method") == "Network.requestWillBeSent"
        ]


def _wait_for_port_file(process: subprocess.Popen[bytes], user_data_dir: Path) -> str:
    port_file = user_data_dir / "DevToolsActivePort"
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrowserError(f"chromium exited early with status {process.returncode}")
        if port_file.is_file():
            lines = port_file.read_text().split()
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(POLL_INTERVAL_S)
    raise BrowserError(f"chromium did not write {port_file} within {STARTUP_DEADLINE_S} s")


def _wait_until_loaded(page: Page, url: str) -> None:
    deadline = time.monotonic() + CALL_DEADLINE_S
    while time.monotonic() < deadline:
        if page.evaluate("[location.href, document.readyState]") == [url, "complete"]:
            return
        time.sleep(POLL_INTERVAL_S)
    raise BrowserError(f"{url} did not finish loading within {CALL_DEADLINE_S} s")


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=CALL_DEADLINE_S)


@contextmanager
def open_page(url: str, user_data_dir: Path) -> Iterator[Page]:
    """Start headless Chromium, load ``url`` in a fresh tab with console and network events on, yield the page."""
    if not CHROMIUM.exists():
        raise BrowserError(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    user_data_dir.mkdir(parents=True, exist_ok=True)
    command = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        connection = websocket.create_connection(
            _wait_for_port_file(process, user_data_dir), timeout=CALL_DEADLINE_S, suppress_origin=True
        )
        try:
            page = Page(connection)
            target = page.call("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
            attached = page.call("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)
            page.session_id = attached["sessionId"]
            for domain in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
                page.call(domain)
            width, height = VIEWPORT
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            page.call("Emulation.setDeviceMetricsOverride", metrics)
            page.events.clear()
            page.call("Page.navigate", {"url": url})
            page.wait_for_event("Page.loadEventFired")
            _wait_until_loaded(page, url)
            yield page
        finally:
            connection.close()
    finally:
        _kill(process)
