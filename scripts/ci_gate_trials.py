"""Acceptance trials of the CI regression gate: how often does an A/A pass, and an A/B regression fail?

Calibrates a baseline with the CI plan serving ``synthetic:cpu_us=300`` (A), then runs the same plan again
``--trials`` times as the candidate (A/A: must pass) and ``--trials`` times with ``synthetic:cpu_us=450``
(A/B: 150 µs more CPU per request, must fail), alternating the order, and checks each against the baseline::

    .venv/bin/python scripts/ci_gate_trials.py --trials 10

Every benchmark holds ``/tmp/servingbench-bench.lock`` (as ``flock`` does) so it never shares the machine with
another benchmark. Work outside the lock (or on the host) can still take the server's core or slow the whole
machine: the check then gives no verdict (exit 2, "disturbed" or "yardstick moved"); such a trial is re-run
after a pause, at most ``--retry-busy`` times, and the re-runs are counted and reported. Prints one line per
attempt and the counts; writes ``trials.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import re
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from servingbench.harness.calibrate import CI_PLAN, build_baseline, unsteady
from servingbench.harness.runner import run_benchmark
from servingbench.reports.regression import EXIT_PASS, EXIT_REGRESSION, CheckResult, check

DEFAULT_TRIALS = 10
DEFAULT_CALIBRATION_RUNS = 3
DEFAULT_OUT = Path("/tmp/ci-gate-trials")
LOCK_FILE = Path("/tmp/servingbench-bench.lock")
BASELINE_SPEC = "synthetic:cpu_us=300"
SLOW_SPEC = "synthetic:cpu_us=450"
DEFAULT_BUSY_RETRIES = 2
BUSY_PAUSE_S = 60.0  # wait before re-running a trial the check found disturbed by other work
BUSY_MARKERS = ("disturbed", "yardstick moved")  # no verdict because of the machine, not the change
MODEL_SPEC_LINE = re.compile(r'(\[models\.model\]\s*\nspec\s*=\s*)"[^"]*"')


@dataclass(frozen=True)
class Trial:
    """One candidate run and the check's verdict on it."""

    kind: str  # "A/A" or "A/B"
    index: int
    exit_code: int
    reason: str
    bundle: str
    seconds: float
    attempt: int = 1

    @property
    def busy(self) -> bool:
        """The check gave no verdict because other work took the server's CPU."""
        return self.exit_code not in (EXIT_PASS, EXIT_REGRESSION) and any(m in self.reason for m in BUSY_MARKERS)


def write_plan(out: Path, name: str, spec: str) -> Path:
    """The CI plan with ``[models.model].spec`` replaced by ``spec``."""
    text, count = MODEL_SPEC_LINE.subn(lambda match: f'{match.group(1)}"{spec}"', CI_PLAN.read_text())
    if count != 1:
        raise SystemExit(f"cannot find [models.model] spec in {CI_PLAN}")
    path = out / f"{name}.toml"
    path.write_text(text)
    return path


@contextlib.contextmanager
def bench_lock(path: Path = LOCK_FILE) -> Iterator[None]:
    """Hold the machine-wide benchmark lock (flock(2), the same lock as ``flock /tmp/servingbench-bench.lock``)."""
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def run_plan(plan: Path, out_root: Path, log: Console) -> Path:
    """One benchmark of ``plan`` under the lock; returns the bundle directory."""
    with bench_lock():
        return run_benchmark(
            plan_path=plan, preset="default", out_root=out_root, targets=[], load_workers=None, console=log
        )


def calibrate_baseline(plan: Path, runs: int, out: Path, log: Console, attempts: int) -> Path:
    """A baseline from ``runs`` A/A runs of ``plan``, as ``servingbench calibrate`` writes it; re-made (at most
    ``attempts`` times in all) while calibration finds the machine unsteady, as its warning asks."""
    for attempt in range(1, attempts + 1):
        bundles = []
        for index in range(runs):
            print(f"calibration {attempt}, run {index + 1}/{runs}", flush=True)
            bundles.append(run_plan(plan, out / "calibration", log))
        calibration = build_baseline(bundles, out / "baseline")
        moving = unsteady(calibration.noise)
        if not moving:
            break
        print(f"calibration {attempt}: the machine was not steady ({'; '.join(moving)})", flush=True)
    return calibration.baseline_dir


def run_trial(kind: str, index: int, plan: Path, baseline: Path, out: Path, log: Console, attempt: int) -> Trial:
    """Benchmark the candidate and check it against the baseline."""
    started = time.monotonic()
    bundle = run_plan(plan, out / "candidates", log)
    result: CheckResult = check(baseline, bundle, out_dir=bundle / "check")
    trial = Trial(kind, index, result.exit_code, result.reason, str(bundle), time.monotonic() - started, attempt)
    print(
        f"trial {index:2d} {kind} (attempt {attempt}): exit {trial.exit_code}: {trial.reason} ({trial.seconds:.0f} s)"
    )
    sys.stdout.flush()
    return trial


def run_until_judged(
    kind: str, index: int, plan: Path, baseline: Path, out: Path, log: Console, retries: int
) -> list[Trial]:
    """Every attempt of one trial: re-run after a pause while the machine was too busy for a verdict."""
    attempts = [run_trial(kind, index, plan, baseline, out, log, 1)]
    while attempts[-1].busy and len(attempts) <= retries:
        time.sleep(BUSY_PAUSE_S)
        attempts.append(run_trial(kind, index, plan, baseline, out, log, len(attempts) + 1))
    return attempts


def summarise(attempts: list[Trial]) -> dict[str, object]:
    """Counts per kind over each trial's last attempt: A/A passes (exit 0), A/B failures (exit 1), no verdict
    (exit 2), and how many attempts were re-runs because the machine was busy."""
    last = {(trial.kind, trial.index): trial for trial in attempts}.values()
    a_a = [trial for trial in last if trial.kind == "A/A"]
    a_b = [trial for trial in last if trial.kind == "A/B"]
    return {
        "aa_passed": sum(trial.exit_code == EXIT_PASS for trial in a_a),
        "aa_total": len(a_a),
        "ab_failed": sum(trial.exit_code == EXIT_REGRESSION for trial in a_b),
        "ab_total": len(a_b),
        "no_verdict": sum(trial.exit_code not in (EXIT_PASS, EXIT_REGRESSION) for trial in last),
        "busy_reruns": sum(trial.attempt > 1 for trial in attempts),
    }


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the runner stops every server and load generator on KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="A/A and A/B trials each (default 10)")
    parser.add_argument("--calibration-runs", type=int, default=DEFAULT_CALIBRATION_RUNS)
    parser.add_argument("--baseline", type=Path, default=None, help="reuse this calibrated baseline")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--retry-busy", type=int, default=DEFAULT_BUSY_RETRIES, help="re-runs of a disturbed trial")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    plans = {"A/A": write_plan(out, "plan-a", BASELINE_SPEC), "A/B": write_plan(out, "plan-b", SLOW_SPEC)}
    with (out / "benchmarks.log").open("a") as log_file:
        log = Console(file=log_file, width=160)
        baseline = args.baseline or calibrate_baseline(
            plans["A/A"], args.calibration_runs, out, log, 1 + args.retry_busy
        )
        trials: list[Trial] = []
        for index in range(1, args.trials + 1):
            order = ("A/A", "A/B") if index % 2 else ("A/B", "A/A")  # alternate: drift hits both kinds alike
            for kind in order:
                trials.extend(run_until_judged(kind, index, plans[kind], baseline, out, log, args.retry_busy))
            counts = summarise(trials)
            (out / "trials.json").write_text(json.dumps({**counts, "trials": [asdict(t) for t in trials]}, indent=1))
    counts = summarise(trials)
    print(
        f"A/A ({BASELINE_SPEC} vs itself): passed {counts['aa_passed']}/{counts['aa_total']}; "
        f"A/B ({BASELINE_SPEC} -> {SLOW_SPEC}): failed {counts['ab_failed']}/{counts['ab_total']}; "
        f"no verdict: {counts['no_verdict']}; re-runs because the machine was busy: {counts['busy_reruns']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
