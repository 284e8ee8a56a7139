"""``servingbench load-worker``: its options, its Locust command line, the shim locustfile, and its clean stop."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from servingbench.harness import distributed
from servingbench.harness.distributed import WorkerOptions, main, worker_argv, write_shim_locustfile
from servingbench.harness.processes import free_port, stop_process_group
from servingbench.loadtests import CONFIG_ENV_VAR, USER_CLASS_BY_KIND, LoadSpec, LocustRunConfig

CHILD_START_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 30.0
POLL_S = 0.05


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"master_host": " "}, "--master"),
        ({"master_host": "h", "master_port": 0}, "--master-port"),
        ({"master_host": "h", "master_port": 70_000}, "--master-port"),
        ({"master_host": "h", "processes": 0}, "--processes"),
    ],
)
def test_options_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkerOptions(**options)  # type: ignore[arg-type]


def test_bad_option_is_exit_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--master", "h", "--processes", "0"]) == 2
    assert capsys.readouterr().err.startswith("servingbench: error: --processes")


def test_worker_fetches_the_locustfile_from_the_master() -> None:
    argv = worker_argv(WorkerOptions("bench.example", 6000))
    assert argv[:3] == [sys.executable, "-m", "locust"]
    assert argv[argv.index("-f") + 1] == "-"
    assert "--worker" in argv and "--processes" not in argv
    assert argv[argv.index("--master-host") + 1] == "bench.example"
    assert argv[argv.index("--master-port") + 1] == "6000"


def test_processes_fork_more_workers() -> None:
    argv = worker_argv(WorkerOptions("h", processes=3))
    assert argv[argv.index("--processes") + 1] == "3"


def test_worker_environment_drops_locust_and_config_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOCUST_USERS", "999")
    monkeypatch.setenv(CONFIG_ENV_VAR, "/elsewhere/config.json")
    env = distributed._worker_env(tmp_path)
    assert "LOCUST_USERS" not in env and CONFIG_ENV_VAR not in env
    assert env["TMPDIR"] == str(tmp_path)


def _assignments(source: str) -> dict[str, object]:
    tree = ast.parse(source)
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()
    }


def test_shim_embeds_the_run_config(tmp_path: Path) -> None:
    spec = LoadSpec(
        base_url="http://127.0.0.1:8000",
        endpoint="/predict",
        payload=b'{"features": [1.0, "\\u00e9"]}',
        kind="closed",
        users=2,
        warmup_s=1.0,
        duration_s=2.0,
        seed=3,
    )
    config = tmp_path / "config.json"
    LocustRunConfig(
        spec=spec, result_path=tmp_path / "r.json", events_path=tmp_path / "e.jsonl", final_report_timeout_s=1.0
    ).write(config)
    shim = write_shim_locustfile(config, tmp_path / "run")
    assert shim.name == distributed.SHIM_LOCUSTFILE_NAME
    source = shim.read_text(encoding="utf-8")
    compile(source, str(shim), "exec")
    values = _assignments(source)
    assert values["_CONFIG_JSON"] == config.read_text(encoding="utf-8")
    assert values["_USER_CLASSES"] == tuple(sorted(USER_CLASS_BY_KIND.values()))
    assert repr(CONFIG_ENV_VAR) in source


def _locust_children(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [child for child in children if "locust" in " ".join(child.cmdline())]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_worker_and_its_locust(tmp_path: Path, sig: signal.Signals) -> None:
    """With no master to join, the Locust worker waits; a signal to load-worker must stop it and exit 130."""
    argv = [sys.executable, "-m", "servingbench.harness.distributed", "--master", "127.0.0.1"]
    argv += ["--master-port", str(free_port())]
    with (tmp_path / "load-worker.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + CHILD_START_TIMEOUT_S
        while not (children := _locust_children(process.pid)) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert children, "load-worker started no Locust worker"
        process.send_signal(sig)
        assert process.wait(timeout=EXIT_TIMEOUT_S) == distributed.EXIT_INTERRUPTED
        _gone, alive = psutil.wait_procs(children, timeout=EXIT_TIMEOUT_S)
        assert not alive
    finally:
        stop_process_group(process)
