"""Power of the CI gate in A/B mode: the false-alarm rate over A/A trials and the detection rate at +5 %, +10 %,
+15 % and +30 % per-request cost, each with its 95 % Clopper-Pearson interval.

Every trial is what ``make bench-ci`` does in CI: ONE benchmark of the CI plan with base and head interleaved
repetition by repetition, judged by the gate. The base is this repository's HEAD, built once into its environment
(``servingbench.gate.environments``, cached); both arms serve ``synthetic:cpu_us=B`` (``--base-cpu-us``, 300). An
A/A trial changes nothing; an effect trial serves ``synthetic:cpu_us=N`` on the head arm only.

How N is chosen: the first trial is an A/A trial (it counts as one); the median server CPU per request of its base
arm, C (the model's B µs plus what the framework and server spend), is the whole request's cost. For a cost
increase of x, the head spins N = B + x * C µs, so the whole request's server CPU grows by x (the model's spin is
CPU time on an otherwise idle core). The script prints C, each N, and the cost change the gate measured per effect.

Trials run in rounds (two A/A trials, then one trial of each effect, in a shuffled order), so a slow drift of the
machine hits every kind alike. Each trial is bounded (``--trial-timeout``), the whole run too (``--max-minutes``);
Ctrl-C or SIGTERM stops every server and load generator and prints what was measured. Every benchmark holds
``/tmp/servingbench-bench.lock`` (as ``flock`` does), so it never shares the machine with another benchmark.
``trials.json`` under ``--out`` is rewritten after every trial::

    .venv/bin/python scripts/ci_gate_trials.py                         # 20 A/A, 10 per effect (~50 s a trial)
    .venv/bin/python scripts/ci_gate_trials.py --aa 2 --per-effect 1 --effects 0.3 \\
        --repetitions 5 --duration 0.5 --min-requests 20 --out /tmp/gate-smoke      # a smoke run, ~2 min
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import random
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

from rich.console import Console
from scipy import stats as scipy_stats

from servingbench.gate import (
    BASE,
    CI_PLAN,
    EXIT_NO_VERDICT,
    EXIT_REGRESSION,
    BaseEnvironment,
    CheckResult,
    judge_ab,
    prepare_base,
    run_ab,
)
from servingbench.gate.environments import BaseBuildError, RefError, default_cache_dir, repo_root
from servingbench.harness import BenchmarkInterrupted, HarnessError, Plan, PlanError, load_plan
from servingbench.reports.bundle import Bundle, BundleError, load_bundle

DEFAULT_AA = 20
DEFAULT_PER_EFFECT = 10
DEFAULT_EFFECTS = (0.05, 0.10, 0.15, 0.30)
DEFAULT_BASE_CPU_US = 300
DEFAULT_OUT = Path("/tmp/ci-gate-trials")
DEFAULT_TRIAL_TIMEOUT_S = 600.0  # a CI-plan trial takes ~50 s; ten times that means something hangs
DEFAULT_MAX_MINUTES = 240.0
AA_PER_ROUND = 2  # A/A trials per round (20 A/A beside 10 of each effect)
CONFIDENCE = 0.95
CPU_METRIC = "cpu_us_per_request"
LOCK_FILE = Path("/tmp/servingbench-bench.lock")
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
T = TypeVar("T")


class TrialTimeout(BaseException):
    """A trial ran past its timeout. A BaseException, like Ctrl-C, so no ``except Exception`` on the way swallows
    it: the runner's context managers stop the servers and load generator as it passes."""


@dataclass(frozen=True)
class Trial:
    """One A/B benchmark and the gate's verdict on it. ``effect`` 0.0 is an A/A trial."""

    effect: float
    index: int
    head_cpu_us: int
    exit_code: int
    reason: str
    bundle: str | None
    seconds: float
    measured_cost_change: float | None = None  # the gate's CPU-per-request cost change, head vs base

    @property
    def kind(self) -> str:
        return "A/A" if self.effect == 0.0 else f"+{self.effect:.0%}"


@dataclass(frozen=True)
class Rate:
    """Trials of one kind that failed the gate (exit 1), with the Clopper-Pearson interval of the rate."""

    kind: str
    failed: int
    total: int
    no_verdict: int
    low: float
    high: float
    measured_cost_change: float | None

    @property
    def rate(self) -> float:
        return self.failed / self.total if self.total else 0.0


def clopper_pearson(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a binomial rate; (0, 1) without trials."""
    if trials == 0:
        return 0.0, 1.0
    interval = scipy_stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="exact")
    return float(interval.low), float(interval.high)


def head_cpu_us(base_cpu_us: int, request_cpu_us: float, effect: float) -> int:
    """The head's synthetic spin (µs) that makes the whole request cost ``effect`` more server CPU."""
    return round(base_cpu_us + effect * request_cpu_us)


def request_cpu_us(bundle: Bundle) -> float:
    """The base arm's median server CPU per request (µs) over its valid runs: the whole request's cost."""
    values = [run.server_cpu_us_per_request for run in bundle.scenario_runs if run.config == BASE]
    measured = [value for value in values if value is not None and value > 0]
    if not measured:
        raise ValueError(f"{bundle.path}: the base arm recorded no server CPU per request")
    return float(statistics.median(measured))


def schedule(aa: int, per_effect: int, effects: Sequence[float], seed: int) -> list[float]:
    """The order of trials: rounds of A/A trials and one trial per effect, shuffled within each round; the first
    trial is always an A/A one (it measures the request's cost)."""
    rng = random.Random(seed)
    remaining = {0.0: aa, **{effect: per_effect for effect in effects}}
    order: list[float] = []
    while any(remaining.values()):
        round_ = [0.0] * min(AA_PER_ROUND, remaining[0.0]) + [e for e in effects if remaining[e]]
        rng.shuffle(round_)
        if not order and 0.0 in round_:
            round_.remove(0.0)
            round_.insert(0, 0.0)
        for effect in round_:
            remaining[effect] -= 1
        order.extend(round_)
    return order


def cpu_change(result: CheckResult) -> float | None:
    """The check's server-CPU-per-request cost change (``None`` without that row)."""
    return next((row.cost_change for row in result.rows if row.key.metric == CPU_METRIC), None)


def judge_trial(bundle_dir: Path, effect: float, index: int, cpu_us: int, seconds: float) -> Trial:
    """The gate's verdict on one trial's bundle (an unreadable bundle is a no-verdict trial)."""
    try:
        result = judge_ab(load_bundle(bundle_dir))
    except BundleError as exc:
        return Trial(effect, index, cpu_us, EXIT_NO_VERDICT, str(exc), str(bundle_dir), seconds)
    return Trial(effect, index, cpu_us, result.exit_code, result.reason, str(bundle_dir), seconds, cpu_change(result))


def summarise(trials: Sequence[Trial]) -> list[Rate]:
    """Per kind (A/A first, then effects in increasing order): how many trials failed the gate, of how many, with
    the interval. A no-verdict trial counts in the total as not failed (it neither alarmed nor detected)."""
    rates = []
    for effect in sorted({trial.effect for trial in trials}):
        mine = [trial for trial in trials if trial.effect == effect]
        failed = sum(trial.exit_code == EXIT_REGRESSION for trial in mine)
        low, high = clopper_pearson(failed, len(mine))
        changes = [trial.measured_cost_change for trial in mine if trial.measured_cost_change is not None]
        rates.append(
            Rate(
                mine[0].kind,
                failed,
                len(mine),
                sum(trial.exit_code == EXIT_NO_VERDICT for trial in mine),
                low,
                high,
                statistics.median(changes) if changes else None,
            )
        )
    return rates


def report_lines(rates: Sequence[Rate]) -> list[str]:
    """The summary a person reads: false alarms for A/A, detection for each effect."""
    lines = []
    for rate in rates:
        word = "false alarms" if rate.kind == "A/A" else "detected"
        measured = (
            "" if rate.measured_cost_change is None else f"; CPU/request measured {rate.measured_cost_change:+.1%}"
        )
        lines.append(
            f"{rate.kind:>5}: {word} {rate.failed}/{rate.total} = {rate.rate:.0%} "
            f"(95% Clopper-Pearson [{rate.low:.0%}, {rate.high:.0%}]); no verdict {rate.no_verdict}{measured}"
        )
    return lines


# --- running -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_lock(path: Path = LOCK_FILE, say: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the machine-wide benchmark lock (flock(2), the same lock as ``flock /tmp/servingbench-bench.lock``);
    when another process holds it, say so before waiting (a ``flock`` on that file around this script would be
    waited for for ever: the script takes the lock per trial itself)."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for {path}: another benchmark holds it (do not wrap this script in flock on that file)")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


STOP = threading.Event()
"""Set by Ctrl-C or SIGTERM. Python swallows an exception raised while it runs an at-fork hook ("Exception ignored
in _releaseLock"), and the harness forks often: the flag makes a swallowed stop take effect at the next chance."""
OVERDUE_ALARM_S = 0.001  # an earlier alarm whose time passed during the trial goes off right after it
RETRY_S = 60.0
"""A swallowed timeout or stop is raised again this much later: longer than stopping two servers and the load
generator takes (each gets 10 s, then SIGKILL), so a retry never lands in the clean-up of one that got through."""


def _stop(signum: int, frame: FrameType | None) -> None:
    STOP.set()
    if callable(signal.getsignal(signal.SIGALRM)):  # inside a trial: re-raise soon if this one is swallowed
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)
    raise KeyboardInterrupt  # the runner stops every server and load generator on KeyboardInterrupt


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`TrialTimeout` in this (main) thread after ``seconds`` (``KeyboardInterrupt`` once stopped),
    again every :data:`RETRY_S` until it gets through."""

    def expire(signum: int, frame: FrameType | None) -> None:
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)
        if STOP.is_set():
            raise KeyboardInterrupt
        raise TrialTimeout(f"over {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    started = time.monotonic()
    earlier, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        # Put back whoever had the alarm before (e.g. pytest-timeout), with what is left of its time.
        left = max(earlier - (time.monotonic() - started), OVERDUE_ALARM_S) if earlier else 0.0
        signal.setitimer(signal.ITIMER_REAL, left)
        signal.signal(signal.SIGALRM, previous)


def trial_plan(args: argparse.Namespace) -> Plan:
    """The CI plan serving ``synthetic:cpu_us=B``, with the knobs the arguments shrink."""
    plan = load_plan(args.plan or CI_PLAN)
    models = tuple(dataclasses.replace(model, spec=f"synthetic:cpu_us={args.base_cpu_us}") for model in plan.models)
    names = ("repetitions", "duration_s", "warmup_s", "min_requests")
    knobs = {name: getattr(args, name) for name in names if getattr(args, name)}
    return dataclasses.replace(plan, models=models, **knobs)


@dataclass
class Session:
    """What every trial shares: the plan, the base environment, where bundles go, the log."""

    plan: Plan
    base: BaseEnvironment
    head_root: Path
    out: Path
    log: Console
    timeout_s: float

    def run(self, effect: float, index: int, cpu_us: int) -> Trial:
        spec = f"synthetic:cpu_us={cpu_us}"
        head_spec: Callable[[str], str] | None = None if effect == 0.0 else (lambda _: spec)

        def measure() -> Path:
            return run_ab(
                self.plan,
                self.base,
                head_root=self.head_root,
                out_root=self.out / "runs",
                console=self.log,
                head_spec=head_spec,
            )

        def judge(bundle: Path, seconds: float) -> Trial:
            return judge_trial(bundle, effect, index, cpu_us, seconds)

        return guarded_trial(effect, index, cpu_us, self.timeout_s, measure, judge)


def guarded_trial(
    effect: float,
    index: int,
    cpu_us: int,
    timeout_s: float,
    measure: Callable[[], T],
    judge: Callable[[T, float], Trial],
) -> Trial:
    """One trial: ``measure()`` under the benchmark lock and ``timeout_s``, then ``judge(measured, seconds)``; a
    timeout or a harness error is a no-verdict trial with its reason."""
    started = time.monotonic()
    try:
        with bench_lock(), time_limit(timeout_s):
            measured = measure()
    except TrialTimeout as exc:
        return Trial(effect, index, cpu_us, EXIT_NO_VERDICT, f"timeout: {exc}", None, time.monotonic() - started)
    except HarnessError as exc:
        return Trial(effect, index, cpu_us, EXIT_NO_VERDICT, f"harness: {exc}", None, time.monotonic() - started)
    return judge(measured, time.monotonic() - started)


def _request_cost(bundle_dir: Path) -> float | None:
    """The request's server CPU from an A/A trial's base arm, or ``None`` when it recorded none."""
    try:
        return request_cpu_us(load_bundle(bundle_dir))
    except (BundleError, ValueError):
        return None


def save_trials(out: Path, trials: Sequence[Trial], request_us: float | None, **extra: object) -> None:
    """Rewrite ``out/trials.json``: the request's cost, ``extra`` (e.g. the speed probe's kind), the rates so far and
    every trial."""
    rates = summarise(trials)
    document = {"request_cpu_us": request_us, **extra, "rates": [asdict(rate) for rate in rates]}
    document["trials"] = [asdict(trial) for trial in trials]
    (out / "trials.json").write_text(json.dumps(document, indent=1))


def run_trials(args: argparse.Namespace) -> list[Trial]:
    """Every trial of the schedule until done, out of time, or interrupted (then re-raises after saving)."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    head_root = repo_root(Path.cwd())
    base = prepare_base(head_root, "HEAD", args.cache or default_cache_dir(), say=print)
    with (out / "benchmarks.log").open("a") as log_file:
        session = Session(trial_plan(args), base, head_root, out, Console(file=log_file, width=160), args.trial_timeout)
        trials: list[Trial] = []
        request_us: float | None = None
        for index, effect in bounded_schedule(args):
            if effect != 0.0 and request_us is None:
                print("stopping: no request cost measured (no A/A trial so far recorded server CPU per request)")
                break
            cpu_us = args.base_cpu_us if effect == 0.0 else head_cpu_us(args.base_cpu_us, request_us or 0.0, effect)
            trial = session.run(effect, index, cpu_us)
            trials.append(trial)
            what = f"trial {index:3d} {trial.kind:>5} (cpu_us={cpu_us})"
            print(f"{what}: exit {trial.exit_code}: {trial.reason} ({trial.seconds:.0f} s)", flush=True)
            if request_us is None and effect == 0.0 and trial.bundle is not None:
                request_us = _request_cost(Path(trial.bundle))
                if request_us is not None:
                    spins = ", ".join(f"+{e:.0%}: {head_cpu_us(args.base_cpu_us, request_us, e)}" for e in args.effects)
                    print(f"request CPU C = {request_us:.0f} µs (base arm median); head spin N = B + x * C µs: {spins}")
            save_trials(out, trials, request_us)
    return trials


def bounded_schedule(args: argparse.Namespace) -> Iterator[tuple[int, float]]:
    """The trials of ``args``' schedule, numbered from 1, until done, a stop signal (raises KeyboardInterrupt) or
    ``--max-minutes`` after the first is asked for (then it says so and ends)."""
    deadline = time.monotonic() + args.max_minutes * 60.0
    for index, effect in enumerate(schedule(args.aa, args.per_effect, args.effects, args.seed), start=1):
        if STOP.is_set():
            raise KeyboardInterrupt
        if time.monotonic() > deadline:
            print(f"stopping: --max-minutes {args.max_minutes:g} reached")
            return
        yield index, effect


def trial_parser(
    description: str, *, aa: int, per_effect: int, effects: Sequence[float], timeout_s: float, out: Path
) -> argparse.ArgumentParser:
    """The arguments every trial script takes: how many trials of which kind, the plan and its overrides, the
    bounds, the seed and where the results go (defaults: the script's own)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--aa", type=int, default=aa, help=f"A/A trials (default {aa})")
    parser.add_argument("--per-effect", type=int, default=per_effect, help=f"trials per effect (default {per_effect})")
    parser.add_argument("--effects", type=float, nargs="+", default=list(effects), help="cost increases")
    parser.add_argument("--base-cpu-us", type=int, default=DEFAULT_BASE_CPU_US, help="B: the model's spin (µs)")
    parser.add_argument("--plan", type=Path, default=None, help="default: the CI plan")
    parser.add_argument("--repetitions", type=int, default=None, help="override the plan's repetitions")
    parser.add_argument("--duration", dest="duration_s", type=float, default=None, help="override the window (s)")
    parser.add_argument("--warmup", dest="warmup_s", type=float, default=None, help="override the warm-up (s)")
    parser.add_argument("--min-requests", type=int, default=None, help="override the plan's valid-run minimum")
    parser.add_argument("--trial-timeout", type=float, default=timeout_s, help="seconds per trial")
    parser.add_argument("--max-minutes", type=float, default=DEFAULT_MAX_MINUTES, help="stop starting trials after")
    parser.add_argument("--seed", type=int, default=1, help="seeds the order of trials")
    parser.add_argument("--out", type=Path, default=out)
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = trial_parser(
        (__doc__ or "").splitlines()[0],
        aa=DEFAULT_AA,
        per_effect=DEFAULT_PER_EFFECT,
        effects=DEFAULT_EFFECTS,
        timeout_s=DEFAULT_TRIAL_TIMEOUT_S,
        out=DEFAULT_OUT,
    )
    parser.add_argument("--cache", type=Path, default=None, help="base environments (default: ~/.cache/servingbench)")
    args = parser.parse_args(argv)
    if args.aa < 1 or args.per_effect < 0 or any(effect <= 0 for effect in args.effects):
        parser.error("--aa must be at least 1 (the first trial measures the request), effects positive")
    return args


def trials_main(
    name: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], list[Trial]],
    usage_errors: tuple[type[Exception], ...],
) -> int:
    """Run a trial script: stop cleanly on Ctrl-C or SIGTERM (printing what was saved), one line for a usage error,
    the rates at the end. Exit 0, 2 (usage) or 130 (interrupted)."""
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _stop)
    try:
        trials = run(args)
    except usage_errors as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, BenchmarkInterrupted):
        print("interrupted: every server and load generator was stopped", file=sys.stderr)
        trials = saved_trials(args.out)
        status = EXIT_INTERRUPTED
    else:
        status = 0
    for line in report_lines(summarise(trials)):
        print(line)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    return trials_main("ci_gate_trials", parse_args(argv), run_trials, (RefError, BaseBuildError, PlanError))


def saved_trials(out: Path) -> list[Trial]:
    """The trials saved so far (after an interrupt, the in-memory list is gone with the frame that held it)."""
    try:
        document = json.loads((out / "trials.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [Trial(**item) for item in document.get("trials", [])]


if __name__ == "__main__":
    sys.exit(main())
