"""``servingbench serve``: a bad model stops it before it binds; a signal stops every worker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from servingbench.harness.processes import free_port, stop_process_group, wait_until_ready

pytestmark = pytest.mark.slow
SERVE_TIMEOUT_S = 60.0


def _serve(*args: str) -> list[str]:
    return [sys.executable, "-m", "servingbench.cli", "serve", *args]


def _tampered_copy(models_dir: Path, tmp_path: Path) -> Path:
    for name in ("fast.skops", "fast.skops.manifest.json"):
        shutil.copy(models_dir / name, tmp_path / name)
    model = tmp_path / "fast.skops"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    return model


@pytest.mark.parametrize("framework", ["fastapi", "flask"])
def test_tampered_model_exits_nonzero_with_one_line(models_dir: Path, tmp_path: Path, framework: str) -> None:
    port = free_port()
    model = _tampered_copy(models_dir, tmp_path)
    done = subprocess.run(
        _serve(framework, "--port", str(port), "--model", str(model)),
        capture_output=True,
        text=True,
        timeout=SERVE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "sha256" in lines[0] and "fast.skops" in lines[0]


@pytest.mark.parametrize("model", ["missing.skops", "synthetic:cpu_us=-3", "no-such-model"])
def test_bad_model_spec_exits_nonzero(tmp_path: Path, model: str) -> None:
    done = subprocess.run(
        _serve(
            "flask", "--port", str(free_port()), "--model", str(tmp_path / model) if model.endswith("skops") else model
        ),
        capture_output=True,
        text=True,
        timeout=SERVE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("servingbench: error: ")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("framework", "server", "sig"),
    [
        # each server family once, each signal on an ASGI and a WSGI server (serve execs the server; its master stops
        # every worker on either signal)
        ("flask", "gunicorn-gthread", signal.SIGTERM),
        ("fastapi", "uvicorn", signal.SIGINT),
        ("wsgi", "granian", signal.SIGINT),
        ("asgi", "granian", signal.SIGTERM),
    ],
)
def test_signal_stops_every_worker(
    models_dir: Path, tmp_path: Path, framework: str, server: str, sig: signal.Signals
) -> None:
    port = free_port()
    env = dict(os.environ, SERVINGBENCH_MODELS_DIR=str(models_dir))
    argv = _serve(framework, "--server", server, "--workers", "2", "--port", str(port), "--model", "synthetic:cpu_us=1")
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", timeout_s=SERVE_TIMEOUT_S, process=process)
        workers = psutil.Process(process.pid).children(recursive=True)
        assert len(workers) >= 2
        process.send_signal(sig)
        process.wait(timeout=SERVE_TIMEOUT_S)
        _gone, alive = psutil.wait_procs(workers, timeout=SERVE_TIMEOUT_S)
        assert alive == []
    finally:
        stop_process_group(process)
