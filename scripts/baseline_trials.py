"""Power of the CI gate's committed-baseline mode on this machine: the false-alarm rate over A/A checks and the
detection rate at +15 % (or other) per-request cost, each with its 95 % Clopper-Pearson interval.

First a calibration: ``--calibration-runs`` N runs of the CI plan (serving ``synthetic:cpu_us=B``) back to back, as
``servingbench calibrate`` makes them, into ``OUT/baseline/noise.json`` (``--baseline DIR`` reuses one made
earlier). Then every trial is what ``servingbench check --baseline`` does: ``--runs`` M new runs of the same plan,
judged by their mean against the calibration. An A/A trial changes nothing; an effect trial serves
``synthetic:cpu_us=N`` from the same plan (the plan, and so the check's plan identity, stays the calibration's;
only the server's model is costlier), with N = B + x * C, C the calibration's median server CPU per request (the
whole request's cost), so the request's server CPU grows by x.

Trials run in rounds (two A/A trials and one of each effect, shuffled), so a drift of the machine over the hour
hits every kind alike. Each trial is bounded (``--trial-timeout``), the whole run too (``--max-minutes``); Ctrl-C
or SIGTERM stops every server and load generator and prints what was measured. Each benchmark holds
``/tmp/servingbench-bench.lock``. ``trials.json`` under ``--out`` is rewritten after every trial::

    .venv/bin/python scripts/baseline_trials.py                              # 20-run calibration, 20 A/A, 10 at +15 %
    .venv/bin/python scripts/baseline_trials.py --calibration-runs 5 --runs 1 --aa 1 --per-effect 1 \\
        --repetitions 5 --duration 0.5 --min-requests 20 --out /tmp/baseline-smoke        # a smoke run, ~2 min
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

if not __package__:  # run as a script (scripts/ on sys.path, not the repository): make `scripts` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.ci_gate_trials import (
    CPU_METRIC,
    Trial,
    bench_lock,
    bounded_schedule,
    cpu_change,
    guarded_trial,
    head_cpu_us,
    save_trials,
    trial_parser,
    trial_plan,
    trials_main,
)
from servingbench.gate import EXIT_NO_VERDICT, NoiseModel, judge_baseline, load_noise
from servingbench.gate.calibrate import build_baseline
from servingbench.gate.check import run_times
from servingbench.gate.noise import NOISE_FILE, NoiseError
from servingbench.harness import Plan, PlanError
from servingbench.harness.cpus import detect_cpus
from servingbench.harness.servers import LocalStarter, ServerStarter
from servingbench.harness.speed import SPEED_PROBE
from servingbench.reports.bundle import BundleError, load_bundle

DEFAULT_CALIBRATION_RUNS = 20
DEFAULT_RUNS = 10
DEFAULT_AA = 20
DEFAULT_PER_EFFECT = 10
DEFAULT_EFFECTS = (0.15,)
DEFAULT_OUT = Path("/tmp/baseline-trials")
DEFAULT_TRIAL_TIMEOUT_S = 900.0  # ten runs of the CI plan take ~4 min


def request_cost_us(noise: NoiseModel) -> float:
    """C: the calibration's median server CPU per request over its runs (µs)."""
    entry = next((entry for entry in noise.entries.values() if entry.key.metric == CPU_METRIC), None)
    if entry is None:
        raise NoiseError("the calibration recorded no server CPU per request")
    return float(statistics.median(entry.run_values))


def judge_runs(
    noise: NoiseModel, bundle_dirs: Sequence[Path], effect: float, index: int, cpu_us: int, seconds: float
) -> Trial:
    """The baseline check's verdict on one trial's runs (an unreadable bundle is a no-verdict trial)."""
    try:
        result = judge_baseline(noise, [load_bundle(path) for path in bundle_dirs])
    except BundleError as exc:
        return Trial(effect, index, cpu_us, EXIT_NO_VERDICT, str(exc), None, seconds)
    where = str(bundle_dirs[0].parent) if bundle_dirs else None
    return Trial(effect, index, cpu_us, result.exit_code, result.reason, where, seconds, cpu_change(result))


@dataclasses.dataclass
class Session:
    """What every trial shares: the plan, the calibration, where bundles go, the log."""

    plan: Plan
    noise: NoiseModel
    out: Path
    log: Console
    runs: int
    timeout_s: float

    def starters(self, cpu_us: int) -> dict[str, ServerStarter]:
        """The plan's one config started as written, serving ``synthetic:cpu_us=cpu_us``."""
        cores = detect_cpus(server_cpus=self.plan.server_cpus).server
        spec = f"synthetic:cpu_us={cpu_us}"
        starter = LocalStarter(cores, self.plan.blas_threads, self.plan.startup_timeout_s, model_spec=lambda _: spec)
        return {config.name: starter for config in self.plan.configs}

    def run(self, effect: float, index: int, cpu_us: int) -> Trial:
        def measure() -> list[Path]:
            return run_times(
                self.plan,
                self.runs,
                out_root=self.out / "runs" / f"t{index:03d}",
                console=self.log,
                label=f"trial {index}: run",
                starters=self.starters(cpu_us),
            )

        def judge(bundles: list[Path], seconds: float) -> Trial:
            return judge_runs(self.noise, bundles, effect, index, cpu_us, seconds)

        return guarded_trial(effect, index, cpu_us, self.timeout_s, measure, judge)


def calibration(args: argparse.Namespace, plan: Plan, log: Console) -> NoiseModel:
    """The baseline the trials are judged against: ``--baseline``'s, or N runs made now."""
    if args.baseline is not None:
        noise = load_noise(args.baseline / NOISE_FILE)
        if noise.stale_probe is not None:
            print(
                f"warning: {args.baseline} was calibrated with another speed probe ({noise.stale_probe}): every trial "
                f"is judged against the plain interval, not this servingbench's speed fit ({SPEED_PROBE})",
                flush=True,
            )
        return noise
    print(f"calibrating: {args.calibration_runs} A/A runs", flush=True)
    with bench_lock():
        bundles = run_times(
            plan, args.calibration_runs, out_root=args.out / "calibration", console=log, label="calibration run"
        )
    return build_baseline(bundles, args.out / "baseline")


def run_trials(args: argparse.Namespace) -> list[Trial]:
    """Every trial of the schedule until done, out of time, or interrupted (then re-raises after saving)."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    plan = trial_plan(args)
    with (out / "benchmarks.log").open("a") as log_file:
        log = Console(file=log_file, width=160)
        noise = calibration(args, plan, log)
        request_us = request_cost_us(noise)
        spins = ", ".join(f"+{e:.0%}: {head_cpu_us(args.base_cpu_us, request_us, e)}" for e in args.effects)
        print(f"request CPU C = {request_us:.0f} µs (calibration median); head spin N = B + x * C µs: {spins}")
        session = Session(plan, noise, out, log, args.runs, args.trial_timeout)
        trials: list[Trial] = []
        for index, effect in bounded_schedule(args):
            cpu_us = args.base_cpu_us if effect == 0.0 else head_cpu_us(args.base_cpu_us, request_us, effect)
            trial = session.run(effect, index, cpu_us)
            trials.append(trial)
            change = "" if trial.measured_cost_change is None else f", CPU/request {trial.measured_cost_change:+.1%}"
            what = f"trial {index:3d} {trial.kind:>5} (cpu_us={cpu_us})"
            print(f"{what}: exit {trial.exit_code}: {trial.reason}{change} ({trial.seconds:.0f} s)", flush=True)
            save_trials(out, trials, request_us, speed_probe=SPEED_PROBE if noise.stale_probe is None else None)
    return trials


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = trial_parser(
        (__doc__ or "").splitlines()[0],
        aa=DEFAULT_AA,
        per_effect=DEFAULT_PER_EFFECT,
        effects=DEFAULT_EFFECTS,
        timeout_s=DEFAULT_TRIAL_TIMEOUT_S,
        out=DEFAULT_OUT,
    )
    parser.add_argument("--calibration-runs", type=int, default=DEFAULT_CALIBRATION_RUNS, help="N (default 20)")
    parser.add_argument("--baseline", type=Path, default=None, help="reuse this calibration (DIR/noise.json)")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="M: runs per check (default 10)")
    args = parser.parse_args(argv)
    if args.calibration_runs < 5 or args.runs < 1:
        parser.error("--calibration-runs must be at least 5 and --runs at least 1")
    if args.aa < 0 or args.per_effect < 0 or any(effect <= 0 for effect in args.effects):
        parser.error("--aa and --per-effect must not be negative, effects positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return trials_main("baseline_trials", parse_args(argv), run_trials, (PlanError, NoiseError))


if __name__ == "__main__":
    sys.exit(main())
