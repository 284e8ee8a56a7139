"""Calibration trials of the report's verdicts (issue 11): how often twins are called different, how often real
differences are found, each count with a 95 % Clopper-Pearson interval.

Runs ``servingbench run --plan ...`` ``--trials`` times for each trial plan and reads each bundle's verdicts:

- ``aa``: ``examples/aa-twins.toml`` (four identical configs, default knobs): the share of twin metric cells called
  faster or slower (acceptance: at most 5 %), and the share of runs with any such call;
- ``stacks``: ``examples/power-stacks.toml`` (Flask / gunicorn sync against FastAPI / uvicorn, fast model): the share
  of runs where sync is called slower in throughput (acceptance: at least 9 of 10);
- ``models``: ``examples/power-models.toml`` (one stack, a model 10 % more expensive per request): the share of runs
  where the costlier model is called slower in throughput (acceptance: at least 8 of 10).

    .venv/bin/python scripts/verdict_trials.py --trials 10                  # all three trials
    .venv/bin/python scripts/verdict_trials.py --trials 10 --only stacks    # one of them
    .venv/bin/python scripts/verdict_trials.py --trials 1 --set repetitions=5 --set duration_s=0.5   # smoke run

Bounded: each benchmark run has a deadline (``--run-timeout-s``), and waiting for the machine-wide benchmark lock
(``/tmp/servingbench-bench.lock``, shared with ``scripts/ci_gate_trials.py``) has one too. On Ctrl-C, SIGTERM or a
deadline the run gets SIGINT (the harness then stops its servers and load generators and keeps a partial bundle);
whatever of its process tree is still alive after ``--grace-s`` is killed. Prints one line per run and the figures
the README quotes; writes ``trials.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from scipy import stats as scipy_stats

from servingbench.reports.bundle import Bundle, BundleError, load_bundle
from servingbench.reports.verdict import GroupVerdict, verdicts

__all__ = [
    "TRIALS",
    "Proportion",
    "RunRecord",
    "TrialPlan",
    "aa_cells",
    "called_slower",
    "clopper_pearson",
    "cost_ratio",
    "log_ratio_sd",
    "main",
    "record_of",
    "run_plan",
    "stop_tree",
    "summarise",
    "with_overrides",
]

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
DEFAULT_TRIALS = 10
DEFAULT_OUT = Path("/tmp/verdict-trials")
DEFAULT_RUN_TIMEOUT_S = 1800.0  # one benchmark run of a trial plan: a few minutes on 2 cores; this is the ceiling
DEFAULT_GRACE_S = 60.0  # after SIGINT, time for the harness to stop its servers and write the partial bundle
LOCK_FILE = Path("/tmp/servingbench-bench.lock")
DEFAULT_LOCK_TIMEOUT_S = 3600.0
LOCK_POLL_S = 1.0
CONFIDENCE = 0.95
THROUGHPUT = "rps"
EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by Ctrl-C
CALLED = ("better", "worse")
TOP_LEVEL_ASSIGNMENT = r"^{key}\s*="


@dataclass(frozen=True)
class TrialPlan:
    """One trial: its plan file, and for a power trial the arm that should be called slower in throughput."""

    name: str
    title: str
    plan: Path
    slower_arm: str | None = None


TRIALS: dict[str, TrialPlan] = {
    "aa": TrialPlan("aa", "A/A, four identical FastAPI / uvicorn configs", EXAMPLES / "aa-twins.toml"),
    "stacks": TrialPlan(
        "stacks",
        "power, Flask / gunicorn sync against FastAPI / uvicorn",
        EXAMPLES / "power-stacks.toml",
        "flask-gunicorn-sync",
    ),
    "models": TrialPlan(
        "models", "power, a model 10% more expensive per request", EXAMPLES / "power-models.toml", "costly"
    ),
}


# --- counting (pure: unit-tested on canned bundles) ----------------------------------------------------------------


@dataclass(frozen=True)
class Proportion:
    """``hits`` of ``total`` with the exact (Clopper-Pearson) interval at :data:`CONFIDENCE`."""

    hits: int
    total: int

    @property
    def interval(self) -> tuple[float, float]:
        return clopper_pearson(self.hits, self.total)

    def __str__(self) -> str:
        if self.total == 0:
            return "0 of 0"
        low, high = self.interval
        share = self.hits / self.total
        return (
            f"{self.hits} of {self.total} = {share:.1%} "
            f"({CONFIDENCE:.0%} Clopper-Pearson {low:.1%}{chr(0x2013)}{high:.1%})"
        )


def clopper_pearson(hits: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact binomial interval of ``hits / total`` (scipy's ``binomtest``); (0, 1) when ``total`` is 0."""
    if total == 0:
        return 0.0, 1.0
    interval = scipy_stats.binomtest(hits, total).proportion_ci(confidence_level=confidence, method="exact")
    return float(interval.low), float(interval.high)


def aa_cells(groups: Sequence[GroupVerdict]) -> tuple[int, int, int]:
    """(called, cells, without a verdict): every arm's comparison with the reference on every metric of every group.

    ``called`` counts cells called better or worse (faster or slower); ``without a verdict`` those below 5 pairs.
    """
    comparisons = [
        item.comparison for group in groups for verdict in group.metrics for item in verdict.outcomes if item.comparison
    ]
    called = sum(comparison.outcome in CALLED for comparison in comparisons)
    few = sum(comparison.outcome == "too-few" for comparison in comparisons)
    return called, len(comparisons), few


def called_slower(groups: Sequence[GroupVerdict], arm: str) -> bool | None:
    """Whether ``arm`` is called slower in every throughput verdict it is in: worse than the reference, or, as the
    reference, some other arm is better. ``None`` when no throughput verdict with an interval includes it."""
    found: list[bool] = []
    for group in groups:
        for verdict in group.metrics:
            if verdict.metric.name != THROUGHPUT:
                continue
            judged = [item.comparison for item in verdict.outcomes if item.comparison and item.comparison.has_interval]
            if verdict.reference == arm and judged:
                found.append(any(comparison.outcome == "better" for comparison in judged))
            found.extend(comparison.outcome == "worse" for comparison in judged if comparison.arm == arm)
    return all(found) if found else None


def log_ratio_sd(groups: Sequence[GroupVerdict], arm: str) -> float | None:
    """The standard deviation of the per-repetition log throughput ratios of the comparison involving ``arm``."""
    for group in groups:
        for verdict in group.metrics:
            for item in verdict.outcomes:
                comparison = item.comparison
                involved = comparison is not None and arm in (comparison.arm, comparison.reference)
                if verdict.metric.name == THROUGHPUT and involved and comparison is not None:
                    return comparison.log_sd
    return None


def cost_ratio(bundle: Bundle, arm: str) -> float | None:
    """Median server CPU per request of ``arm`` (a config or a model) over that of the other arms' runs: the measured
    cost of the costlier model against the base one, to check a power plan's premise."""
    mine: list[float] = []
    others: list[float] = []
    for run in bundle.scenario_runs:
        value = run.server_cpu_us_per_request
        if value is not None and value > 0.0:
            (mine if arm in (run.config, run.model) else others).append(value)
    if not mine or not others:
        return None
    return statistics.median(mine) / statistics.median(others)


@dataclass(frozen=True)
class RunRecord:
    """One benchmark run of a trial plan and what its report concluded."""

    trial: str
    index: int
    status: str  # "ok", "timeout", "failed (exit N)", "no bundle", "bad bundle: ..."
    seconds: float
    bundle: str | None = None
    called: int = 0
    cells: int = 0
    no_verdict_cells: int = 0
    slower: bool | None = None
    log_sd: float | None = None
    cost_ratio: float | None = None


def record_of(trial: TrialPlan, index: int, bundle: Bundle, seconds: float) -> RunRecord:
    """The counts one bundle contributes to its trial."""
    groups = verdicts(bundle)
    called, cells, few = aa_cells(groups)
    arm = trial.slower_arm
    return RunRecord(
        trial=trial.name,
        index=index,
        status="ok",
        seconds=seconds,
        bundle=str(bundle.path),
        called=called,
        cells=cells,
        no_verdict_cells=few,
        slower=called_slower(groups, arm) if arm else None,
        log_sd=log_ratio_sd(groups, arm) if arm else None,
        cost_ratio=cost_ratio(bundle, arm) if arm else None,
    )


def summarise(trial: TrialPlan, records: Sequence[RunRecord]) -> list[str]:
    """The lines the README quotes for one trial."""
    mine = [record for record in records if record.trial == trial.name]
    judged = [record for record in mine if record.status == "ok"]
    head = f"{trial.title} ({trial.plan.name}, {len(mine)} runs, {len(judged)} with a bundle)"
    if trial.slower_arm is None:
        # A cell below 5 pairs cannot be called either way: it is left out of the share, and counted on its own.
        cells = Proportion(sum(r.called for r in judged), sum(r.cells - r.no_verdict_cells for r in judged))
        runs = Proportion(sum(r.called > 0 for r in judged), len(judged))
        few = sum(r.no_verdict_cells for r in judged)
        return [
            f"{head}: twin metric cells (with a verdict) called faster or slower: {cells}",
            f"  runs with any such call: {runs}; cells without a verdict (fewer than 5 pairs): {few}",
            "  (cells of one run share its data, so the cell interval treats correlated cells as independent; the "
            "run count does not)",
        ]
    verdict = [record for record in judged if record.slower is not None]
    slower = Proportion(sum(bool(r.slower) for r in verdict), len(verdict))
    spreads = [r.log_sd for r in judged if r.log_sd is not None]
    costs = [r.cost_ratio for r in judged if r.cost_ratio is not None]
    lines = [f"{head}: {trial.slower_arm} called slower in throughput in {slower} runs with a verdict"]
    details = [f"runs without a throughput verdict: {len(judged) - len(verdict)}"]
    if spreads:
        details.append(f"median SD of the per-repetition log throughput ratio: {statistics.median(spreads):.3f}")
    if costs:
        details.append(
            f"median CPU per request of {trial.slower_arm} over the other arm: {statistics.median(costs):.3f}"
        )
    return [*lines, "  " + "; ".join(details)]


# --- running (bounded, and every process stopped) ------------------------------------------------------------------


def with_overrides(plan: Path, overrides: Sequence[str], out: Path) -> Path:
    """``plan`` with top-level knobs replaced by ``KEY=VALUE`` (TOML values), written under ``out``; the plan
    itself when there are none. Raises ``SystemExit`` with one line for a malformed override."""
    if not overrides:
        return plan
    text = plan.read_text(encoding="utf-8")
    head, _, tables = text.partition("\n[")
    lines = []
    for override in overrides:
        key, sep, value = override.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise SystemExit(f"--set {override!r}: expected KEY=VALUE, e.g. repetitions=5")
        head = re.sub(TOP_LEVEL_ASSIGNMENT.format(key=re.escape(key)) + r".*$", "", head, flags=re.MULTILINE)
        lines.append(f"{key} = {value.strip()}")
    derived = "\n".join(lines) + "\n" + head + ("\n[" + tables if tables else "")
    try:
        tomllib.loads(derived)
    except tomllib.TOMLDecodeError as exc:
        raise SystemExit(f"--set {' '.join(overrides)}: not valid TOML: {exc}") from exc
    path = out / f"{plan.stem}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(derived, encoding="utf-8")
    return path


def stop_tree(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """Stop ``process`` and everything it started: SIGINT to its group (the harness cleans up on it), then, after
    ``grace_s``, SIGKILL to every descendant still alive, including servers in sessions of their own."""
    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    with contextlib.suppress(psutil.NoSuchProcess):
        family += psutil.Process(process.pid).children(recursive=True)
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(family, timeout=grace_s)
    process.wait()


@contextlib.contextmanager
def bench_lock(timeout_s: float, path: Path = LOCK_FILE) -> Iterator[None]:
    """Hold the machine-wide benchmark lock (flock), waiting at most ``timeout_s``."""
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"another benchmark held {path} for {timeout_s:g} s; giving up") from None
                time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def find_bundle(out: Path) -> Path | None:
    """The bundle a run wrote under ``out``: ``out/latest``, else the newest directory holding a results.json."""
    latest = out / "latest"
    if (latest / "results.json").is_file():
        return latest.resolve()
    found = sorted((path.parent for path in out.glob("*/results.json")), key=lambda path: path.stat().st_mtime)
    return found[-1] if found else None


def run_plan(
    command: Sequence[str], plan: Path, out: Path, log: Path, *, timeout_s: float, grace_s: float
) -> tuple[str, Path | None]:
    """Run ``command run --plan PLAN --out OUT --no-report`` with a deadline; (status, bundle directory or None).

    On a deadline or any interruption (Ctrl-C) the run and its process tree are stopped (:func:`stop_tree`) before
    this returns or re-raises."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [*command, "run", "--plan", str(plan), "--out", str(out), "--no-report"]
    with log.open("ab") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop_tree(process, grace_s)
            return "timeout", find_bundle(out)
        except BaseException:
            stop_tree(process, grace_s)
            raise
    return ("ok" if code == 0 else f"failed (exit {code})"), find_bundle(out)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="runs of each trial plan (default 10)")
    parser.add_argument("--only", choices=tuple(TRIALS), action="append", help="run only this trial (repeatable)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where bundles go (default {DEFAULT_OUT})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a top-level plan knob in every trial plan, e.g. repetitions=50")  # fmt: skip
    parser.add_argument("--run-timeout-s", type=float, default=DEFAULT_RUN_TIMEOUT_S)
    parser.add_argument("--grace-s", type=float, default=DEFAULT_GRACE_S)
    parser.add_argument("--lock-timeout-s", type=float, default=DEFAULT_LOCK_TIMEOUT_S)
    parser.add_argument("--servingbench", default=str(Path(sys.executable).parent / "servingbench"),
                        help="the servingbench command (default: the one beside this Python)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    return args


def _one_run(trial: TrialPlan, index: int, plan: Path, args: argparse.Namespace) -> RunRecord:
    out = args.out / trial.name / f"run{index:02d}"
    started = time.monotonic()
    with bench_lock(args.lock_timeout_s):
        status, bundle_dir = run_plan(
            [args.servingbench], plan, out, args.out / "benchmarks.log", timeout_s=args.run_timeout_s,
            grace_s=args.grace_s,
        )  # fmt: skip
    seconds = time.monotonic() - started
    if status != "ok" or bundle_dir is None:
        return RunRecord(trial.name, index, status if bundle_dir is not None else f"{status}; no bundle", seconds)
    try:
        return record_of(trial, index, load_bundle(bundle_dir), seconds)
    except BundleError as exc:
        return RunRecord(trial.name, index, f"bad bundle: {exc}", seconds, str(bundle_dir))


def _line(record: RunRecord) -> str:
    parts = [f"{record.trial} run {record.index:2d}: {record.status} ({record.seconds:.0f} s)"]
    if record.status == "ok":
        parts.append(f"{record.called} of {record.cells} cells called")
        if record.slower is not None:
            parts.append("called slower" if record.slower else "NOT called slower")
        if record.log_sd is not None and not math.isnan(record.log_sd):
            parts.append(f"log-ratio SD {record.log_sd:.3f}")
    return "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    chosen = [TRIALS[name] for name in dict.fromkeys(args.only or TRIALS)]
    args.out.mkdir(parents=True, exist_ok=True)
    plans = {trial.name: with_overrides(trial.plan, args.overrides, args.out / "plans") for trial in chosen}
    records: list[RunRecord] = []
    try:
        for index in range(1, args.trials + 1):
            for trial in chosen:  # interleaved, so slow drift of the machine hits every trial alike
                records.append(_one_run(trial, index, plans[trial.name], args))
                print(_line(records[-1]), flush=True)
                (args.out / "trials.json").write_text(json.dumps([asdict(r) for r in records], indent=1))
    except KeyboardInterrupt:
        print("interrupted: every benchmark process was stopped; counts so far:", flush=True)
        interrupted = True
    else:
        interrupted = False
    for trial in chosen:
        print("\n".join(summarise(trial, records)), flush=True)
    return EXIT_INTERRUPTED if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
