"""``servingbench check``: measure what the check needs, judge it, write the outputs, return the exit status.

Three ways in:

- ``--base REF``: build the base commit's environment (:mod:`servingbench.gate.environments`), run ONE benchmark of
  the CI plan with two identical server configs, ``base`` (served by the base's code) and ``head`` (this checkout),
  interleaved repetition by repetition by the runner, and judge them with :func:`servingbench.gate.ab.judge_ab`;
- ``--baseline DIR [CURRENT]``: judge CURRENT (or a run of the plan made now) against a committed baseline, on the
  machine that made it only (:func:`servingbench.gate.baseline.judge_baseline`);
- ``--bundle DIR``: judge an A/B bundle that ``--base`` already measured (no run).
"""

from __future__ import annotations

import dataclasses
import secrets
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from servingbench.harness import HarnessError, Plan, PlanError, load_plan, run_benchmark
from servingbench.harness.cpus import CpuAllocationError, detect_cpus
from servingbench.harness.plan import ConfigPlan
from servingbench.harness.servers import LocalStarter, ServerStarter
from servingbench.reports.bundle import Bundle, BundleError, load_bundle

from .ab import BASE, HEAD, judge_ab
from .baseline import DEFAULT_RUNS, judge_baseline
from .environments import (
    BaseBuildError,
    BaseEnvironment,
    RefError,
    default_cache_dir,
    map_model_spec,
    prepare_base,
    prepare_head,
    repo_root,
)
from .noise import NOISE_FILE, NoiseError, NoiseModel, load_noise
from .result import CheckResult, Mode, no_verdict

__all__ = [
    "CI_PLAN",
    "DEFAULT_BASELINE_DIR",
    "DEFAULT_OUT",
    "CheckRequest",
    "GateUsageError",
    "ab_plan",
    "check",
    "run_ab",
    "run_times",
]

CI_PLAN = Path(__file__).resolve().parent.parent / "harness" / "ci_plan.toml"
DEFAULT_OUT = Path("results/ci")
DEFAULT_BASELINE_DIR = Path("baselines/ci")


class GateUsageError(ValueError):
    """The request is unusable before anything runs (exit 2): a bad ref, plan, or path. One line."""


@dataclass(frozen=True)
class CheckRequest:
    """What ``servingbench check`` was asked. Exactly one of ``base``, ``baseline``, ``bundle`` is set."""

    base: str | None = None
    baseline: Path | None = None
    bundle: Path | None = None
    current: tuple[Path, ...] = ()
    """With ``baseline``: finished runs to judge (by their mean); none: ``runs`` runs of the plan made now."""
    runs: int = DEFAULT_RUNS
    plan: Path | None = None
    preset: str = "default"
    out: Path = DEFAULT_OUT
    noise: Path | None = None
    cache: Path | None = None
    report: bool = True
    allow_shared_cores: bool = False
    head_spec: Callable[[str], str] | None = field(default=None, compare=False)
    """Serve this model spec on the head arm instead of the plan's (trials inject a cost into head only)."""


def ab_plan(plan: Plan) -> Plan:
    """The plan with its one server config as two identical configs, ``base`` and ``head`` (the runner interleaves
    them in every repetition). :class:`GateUsageError` for a plan with more than one config."""
    if len(plan.configs) != 1:
        names = ", ".join(config.name for config in plan.configs)
        raise GateUsageError(f"{plan.source}: an A/B check needs a plan with exactly one config, found {names}")
    launch = plan.configs[0].launch
    return dataclasses.replace(plan, configs=(ConfigPlan(BASE, launch), ConfigPlan(HEAD, launch)))


def _load_plan(path: Path | None, preset: str) -> Plan:
    try:
        return load_plan(path or CI_PLAN, preset)
    except PlanError as exc:
        raise GateUsageError(str(exc)) from exc


def run_ab(
    plan: Plan,
    base: BaseEnvironment,
    *,
    head_root: Path,
    out_root: Path,
    console: Console,
    head_spec: Callable[[str], str] | None = None,
    allow_shared_cores: bool = False,
    seed: int | None = None,
) -> Path:
    """One benchmark of ``plan`` as base vs head (see :func:`ab_plan`); returns the bundle directory.

    ``base``'s servers run its launcher with the plan's model files mapped into its tree; ``head``'s run a launcher
    of the same form on a snapshot of ``head_root``'s src (:func:`~servingbench.gate.environments.prepare_head`).
    ``seed`` orders the servers' starts and each repetition (default: a fresh one). Raises what
    :func:`~servingbench.harness.run_benchmark` raises (``HarnessError``, ``BenchmarkInterrupted``).
    """
    # A fresh seed per check (recorded in the bundle's plan): which server starts first and the order within each
    # repetition then differ from check to check, so no fixed position favours one arm in every check.
    plan = dataclasses.replace(ab_plan(plan), seed=secrets.randbits(63) if seed is None else seed)
    try:
        cores = detect_cpus(server_cpus=plan.server_cpus, allow_shared=allow_shared_cores).server
        head_launcher = prepare_head(head_root, base.cache, base.lock_key)
    except CpuAllocationError as exc:
        raise HarnessError(str(exc)) from exc
    except BaseBuildError as exc:
        raise HarnessError(f"the head could not be prepared: {exc}") from exc
    starters: dict[str, ServerStarter] = {
        BASE: LocalStarter(
            cores,
            plan.blas_threads,
            plan.startup_timeout_s,
            python=str(base.launcher),
            model_spec=lambda spec: map_model_spec(spec, head_root, base.source),
        ),
        HEAD: LocalStarter(
            cores, plan.blas_threads, plan.startup_timeout_s, python=str(head_launcher), model_spec=head_spec
        ),
    }
    return _run_plan(plan, out_root=out_root, console=console, allow_shared_cores=allow_shared_cores, starters=starters)


def _run_plan(
    plan: Plan,
    *,
    out_root: Path,
    console: Console,
    allow_shared_cores: bool,
    starters: Mapping[str, ServerStarter] | None = None,
) -> Path:
    """One local run of ``plan`` (no remote targets, no distributed load); its bundle directory."""
    return run_benchmark(
        plan_path=plan,
        preset=plan.preset,
        out_root=out_root,
        targets=[],
        load_workers=None,
        console=console,
        allow_shared_cores=allow_shared_cores,
        starters=starters,
    )


def run_times(
    plan: Plan,
    runs: int,
    *,
    out_root: Path,
    console: Console,
    label: str,
    allow_shared_cores: bool = False,
    starters: Mapping[str, ServerStarter] | None = None,
) -> list[Path]:
    """Run ``plan`` ``runs`` times back to back (calibration, a baseline check); the bundle directories.
    ``starters``: per config, how its servers start (default: as the plan says; trials serve a costlier model with
    the plan unchanged). Raises what :func:`~servingbench.harness.run_benchmark` raises."""
    bundles = []
    for index in range(runs):
        console.print(f"{label} {index + 1} of {runs}", highlight=False)
        bundles.append(
            _run_plan(
                plan, out_root=out_root, console=console, allow_shared_cores=allow_shared_cores, starters=starters
            )
        )
    return bundles


def _noise(path: Path | None, *, required: bool) -> NoiseModel | None:
    """The calibration at ``path`` (default: the committed baseline's, when there is one)."""
    chosen = path or DEFAULT_BASELINE_DIR / NOISE_FILE
    if path is None and not chosen.is_file():
        return None
    try:
        return load_noise(chosen)
    except NoiseError as exc:
        if required or path is not None:
            raise GateUsageError(str(exc)) from exc
        return None


def _bundle_result(bundle_dir: Path, judge: Callable[[Bundle], CheckResult], mode: Mode) -> CheckResult:
    try:
        bundle = load_bundle(bundle_dir)
    except BundleError as exc:
        return no_verdict(mode, str(exc), bundle=str(bundle_dir))
    return judge(bundle)


def _model_notes(plan: Plan, head_root: Path, base: BaseEnvironment) -> list[str]:
    notes = []
    for model in plan.models:
        mapped = map_model_spec(model.spec, head_root, base.source)
        if mapped == model.spec and model.spec.startswith("/"):
            notes.append(f"model {model.name}: the base serves the head's file {model.spec} (not in the base's tree)")
    return notes


def _with(result: CheckResult, notes: list[str], context: Mapping[str, Any]) -> CheckResult:
    return dataclasses.replace(result, notes=(*result.notes, *notes), context={**result.context, **context})


def _check_ab(request: CheckRequest, console: Console) -> CheckResult:
    assert request.base is not None
    plan = _load_plan(request.plan, request.preset)
    ab_plan(plan)  # refuse a plan of several configs before building anything
    noise = _noise(request.noise, required=False)
    try:
        head_root = repo_root(Path.cwd())
        cache = request.cache or default_cache_dir()
        base = prepare_base(head_root, request.base, cache, say=lambda line: console.print(line, highlight=False))
    except RefError as exc:
        raise GateUsageError(str(exc)) from exc
    except BaseBuildError as exc:
        return no_verdict("ab", f"the base environment could not be built: {exc}", base_ref=request.base)
    context = {"base": base.to_json(), "plan": plan.source}
    console.print(
        f"servingbench check: base {base.commit[:12]} ({request.base}) against this checkout, "
        f"{'reusing' if not base.built else 'built: ' + ', '.join(base.built) + ';'} cache {cache}",
        highlight=False,
    )
    try:
        bundle_dir = run_ab(
            plan,
            base,
            head_root=head_root,
            out_root=request.out,
            console=console,
            head_spec=request.head_spec,
            allow_shared_cores=request.allow_shared_cores,
        )
    except HarnessError as exc:
        return no_verdict("ab", f"the benchmark could not run: {exc}", **context)
    _report(request, bundle_dir, console)
    result = _bundle_result(bundle_dir, lambda bundle: judge_ab(bundle, noise=noise), "ab")
    return _with(result, _model_notes(plan, head_root, base), context)


def _check_baseline(request: CheckRequest, console: Console) -> CheckResult:
    assert request.baseline is not None
    noise = _noise(request.noise or request.baseline / NOISE_FILE, required=True)
    assert noise is not None
    currents = list(request.current)
    if not currents:
        plan = _load_plan(request.plan, request.preset)
        try:
            currents = run_times(
                plan,
                request.runs,
                out_root=request.out,
                console=console,
                label="servingbench check: run against the baseline",
                allow_shared_cores=request.allow_shared_cores,
            )
        except HarnessError as exc:
            return no_verdict("baseline", f"the benchmark could not run: {exc}", baseline=str(request.baseline))
        _report(request, currents[-1], console)
    bundles = []
    for path in currents:
        try:
            bundles.append(load_bundle(path))
        except BundleError as exc:
            return no_verdict("baseline", str(exc), bundle=str(path))
    return judge_baseline(noise, bundles)


def _report(request: CheckRequest, bundle_dir: Path, console: Console) -> None:
    """The bundle's own HTML report beside the check's (a failure to render is a note, never a verdict)."""
    if not request.report:
        return
    from servingbench.reports import render_report

    try:
        console.print(f"report: {render_report(bundle_dir)}", highlight=False)
    except (BundleError, ValueError, OSError) as exc:
        console.print(f"servingbench check: no HTML report of the run: {exc}", highlight=False)


def check(request: CheckRequest, console: Console | None = None) -> CheckResult:
    """Run the check ``request`` asks for. Raises :class:`GateUsageError` (exit 2) for a request unusable before
    anything runs and :class:`~servingbench.harness.BenchmarkInterrupted` on Ctrl-C (every process stopped, the
    partial bundle kept); every other failure is a result with status "no verdict"."""
    console = console or Console(file=sys.stderr)
    if request.base is not None:
        return _check_ab(request, console)
    if request.baseline is not None:
        return _check_baseline(request, console)
    if request.bundle is not None:
        noise = _noise(request.noise, required=False)
        return _bundle_result(request.bundle, lambda bundle: judge_ab(bundle, noise=noise), "ab")
    raise GateUsageError("give one of --base REF, --baseline DIR or --bundle DIR")
