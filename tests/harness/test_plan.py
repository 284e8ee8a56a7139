"""The run plan: the built-in default, presets, user files, and one-line errors for every kind of mistake."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sklearn.linear_model import Ridge

from servingbench.harness.plan import (
    FIRST_STEP_WARMUP_FACTOR,
    PRESET_NAMES,
    RUN_OVERHEAD_S,
    Plan,
    PlanError,
    estimate_seconds,
    load_plan,
    parse_plan,
)
from servingbench.shared_model.artifacts import save_model

QUICK_BUDGET_S = 120.0  # the issue: --quick under 2 minutes on 2 cores
DEFAULT_BUDGET_S = 15 * 60.0  # the default plan under 15 minutes

MINIMAL = """
warmup_s = 0.5
[configs.a]
framework = "fastapi"
server = "uvicorn"
[models.m]
spec = "synthetic:sleep_ms=2"
scenarios = ["s"]
[scenarios.s]
endpoint = "/predict"
concurrency = [1, 4]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(text, encoding="utf-8")
    return path


def builtin_data() -> dict[str, Any]:
    """The built-in plan as plain data, to break one thing at a time."""
    import tomllib
    from importlib import resources

    return tomllib.loads(resources.files("servingbench.harness").joinpath("default_plan.toml").read_text())


def plan_error(data: dict[str, Any], preset: str = "default") -> str:
    with pytest.raises(PlanError) as info:
        parse_plan(data, preset=preset, source="p.toml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("p.toml: ")
    return message


# --- the built-in plan and presets ------------------------------------------------------------------


def test_default_plan_covers_the_matrix() -> None:
    plan = load_plan()
    servers = {(c.framework, c.server, c.route) for c in plan.configs}
    assert servers == {
        ("fastapi", "uvicorn", "def"),
        ("fastapi", "uvicorn", "async"),
        ("fastapi", "gunicorn-uvicorn", "def"),
        ("flask", "gunicorn-sync", "def"),
        ("flask", "gunicorn-gthread", "def"),
    }
    specs = {m.spec for m in plan.models}
    assert {"fast", "heavy"} <= specs
    assert any(spec.startswith("synthetic:sleep_ms=") for spec in specs)
    batch = [s for s in plan.scenarios if s.endpoint == "/predict/batch"]
    assert batch and batch[0].batch_size == 32  # offered to plans of your own, not run by default
    assert plan.repetitions >= 6  # every figure with a verdict rests on at least 6 repetitions
    assert min(plan.repetitions, plan.capacity_repetitions) >= 6
    assert plan.workers == 1
    assert plan.error_rate_limit == pytest.approx(0.01)
    assert plan.preset == "default"


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_preset_loads_and_serialises(preset: str) -> None:
    plan = load_plan(None, preset)
    data = json.loads(json.dumps(plan.to_json()))
    assert data["preset"] == preset
    assert set(data["configs"]) == {c.name for c in plan.configs}


def test_presets_order_by_effort() -> None:
    quick, default, rigorous = (load_plan(None, name) for name in ("quick", "default", "rigorous"))
    assert quick.repetitions <= default.repetitions < rigorous.repetitions
    assert quick.duration_s < default.duration_s < rigorous.duration_s
    assert estimate_seconds(quick) < estimate_seconds(default) < estimate_seconds(rigorous)


def test_preset_budgets_by_estimate() -> None:
    assert estimate_seconds(load_plan(None, "quick")) < QUICK_BUDGET_S
    assert estimate_seconds(load_plan(None, "default")) < DEFAULT_BUDGET_S


def test_quick_shrinks_every_sweep_to_one_level() -> None:
    plan = load_plan(None, "quick")
    levels = {m.concurrency for model in plan.models for m in plan.measurements(model) if m.kind == "closed"}
    assert levels == {8}


def test_model_concurrency_overrides_the_scenario_sweep() -> None:
    plan = load_plan()
    heavy = next(m for m in plan.models if m.name == "heavy")
    fast = next(m for m in plan.models if m.name == "fast")
    assert {m.concurrency for m in plan.measurements(heavy)} == {8}
    assert [m.scenario for m in plan.measurements(fast)] == ["single-c8", "capacity"]
    rigorous = load_plan(None, "rigorous")
    assert [m.scenario for m in rigorous.measurements(fast)] == ["single-c1", "single-c8", "single-c32", "capacity"]


def test_the_default_plan_measures_the_capacity_curve_after_the_closed_loop_peak_of_every_config() -> None:
    plan = load_plan()
    fast = next(m for m in plan.models if m.name == "fast")
    kinds = [m.kind for m in plan.measurements(fast)]
    assert kinds[-1] == "capacity" and kinds.count("capacity") == 1 and set(kinds[:-1]) == {"closed"}
    assert plan.slo_p99_ms == 50.0 and plan.capacity_step_requests >= 1000  # a step's p99 rests on 10+ requests


def test_quick_runs_the_fast_model_only_and_a_plan_of_your_own_keeps_its_models(tmp_path: Path) -> None:
    assert [model.name for model in load_plan(None, "quick").models] == ["fast"]
    assert [model.name for model in load_plan(write(tmp_path, MINIMAL), "quick").models] == ["m"]


# --- user plan files ---------------------------------------------------------------------------------


def test_user_plan_keeps_missing_knobs_and_sections_from_the_builtin(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, MINIMAL))
    builtin = load_plan()
    assert plan.warmup_s == 0.5
    assert plan.duration_s == builtin.duration_s
    assert [c.name for c in plan.configs] == ["a"]
    assert plan.presets == builtin.presets
    assert [m.scenario for m in plan.measurements(plan.models[0])] == ["s-c1", "s-c4"]
    assert plan.source == str(tmp_path / "plan.toml")


def test_model_file_path_is_resolved_against_the_plan(tmp_path: Path) -> None:
    # a real model file: a plan verifies its model files when it loads
    rows = [[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]
    estimator = Ridge().fit(rows, [0.0, 1.0, 2.0])
    save_model(estimator, tmp_path / "mine.skops", name="m", version="1", feature_names=("a", "b"), sample_rows=rows)
    plan = load_plan(write(tmp_path, MINIMAL.replace('"synthetic:sleep_ms=2"', '"mine.skops"')))
    assert plan.models[0].spec == str((tmp_path / "mine.skops").resolve())


def test_missing_model_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"models\.m\.spec: 'missing\.skops'"):
        load_plan(write(tmp_path, MINIMAL.replace('"synthetic:sleep_ms=2"', '"missing.skops"')))


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="not valid TOML"):
        load_plan(write(tmp_path, "workers = = 1"))
    with pytest.raises(PlanError, match="cannot read plan"):
        load_plan(tmp_path / "nope.toml")


def test_open_loop_scenario_expands_by_rate(tmp_path: Path) -> None:
    text = MINIMAL.replace("concurrency = [1, 4]", 'kind = "open"\nrates = [100, 250.5]\nusers = 16')
    plan = load_plan(write(tmp_path, text))
    runs = plan.measurements(plan.models[0])
    assert [(m.scenario, m.target_rps, m.users, m.concurrency) for m in runs] == [
        ("s-r100", 100.0, 16, None),
        ("s-r250.5", 250.5, 16, None),
    ]


CAPACITY = """
[scenarios.cap]
kind = "capacity"
endpoint = "/predict"
"""


def test_capacity_scenario_is_one_measurement_after_the_closed_loop(tmp_path: Path) -> None:
    text = MINIMAL.replace('scenarios = ["s"]', 'scenarios = ["s", "cap"]') + CAPACITY
    plan = load_plan(write(tmp_path, text))
    runs = plan.measurements(plan.models[0])
    assert [(m.scenario, m.kind) for m in runs] == [("s-c1", "closed"), ("s-c4", "closed"), ("cap", "capacity")]
    assert (runs[-1].arrivals, runs[-1].grid, runs[-1].target_rps) == ("poisson", (), None)
    assert plan.to_json()["scenarios"]["cap"]["kind"] == "capacity"


def test_capacity_knobs_a_plan_leaves_out_come_from_the_builtin(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, MINIMAL + CAPACITY))
    builtin = load_plan()
    assert (plan.slo_p99_ms, plan.capacity_points) == (50.0, builtin.capacity_points)
    assert (plan.capacity_step_requests, plan.capacity_max_step_s) == (1000, builtin.capacity_max_step_s)
    assert plan.to_json()["slo_p99_ms"] == 50.0


def test_the_slo_and_curve_knobs_are_set_in_the_plan_and_by_presets(tmp_path: Path) -> None:
    text = "slo_p99_ms = 20.0\ncapacity_points = 5\ntraffic_rps = 120\n" + MINIMAL + CAPACITY
    text += "[presets.quick]\ncapacity_points = 3\nslo_p99_ms = 30\n"
    plan = load_plan(write(tmp_path, text))
    assert (plan.slo_p99_ms, plan.capacity_points, plan.traffic_rps) == (20.0, 5, 120.0)
    quick = load_plan(write(tmp_path, text), "quick")
    assert (quick.slo_p99_ms, quick.capacity_points) == (30.0, 3)


def test_capacity_scenario_takes_arrivals_and_a_fixed_grid(tmp_path: Path) -> None:
    text = MINIMAL.replace('scenarios = ["s"]', 'scenarios = ["cap"]')
    text += CAPACITY + 'arrivals = "constant"\nrates = [60, 40, 50, 40]\n'
    plan = load_plan(write(tmp_path, text))
    measurement = plan.measurements(plan.models[0])[0]
    assert (measurement.arrivals, measurement.grid) == ("constant", (40.0, 50.0, 60.0))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("capacity_tolerance = 0.05", "capacity_tolerance: no longer a knob"),
        ("[presets.quick]\ncapacity_max_steps = 3", "presets.quick.capacity_max_steps: no longer a knob"),
    ],
)
def test_the_search_knobs_are_retired_with_a_pointer(tmp_path: Path, text: str, words: str) -> None:
    body = MINIMAL + text if text.startswith("[") else text + "\n" + MINIMAL
    with pytest.raises(PlanError, match=words):
        load_plan(write(tmp_path, body))


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("concurrency = [4]", "scenarios.cap.concurrency: applies to kind 'closed' only, not 'capacity'"),
        ('arrivals = "bursty"', "scenarios.cap.arrivals: 'bursty' is not one of 'poisson', 'constant'"),
        ("start_rps = 10", "scenarios.cap.start_rps: no longer a knob"),
        ("rates = [0]", "scenarios.cap.rates: 0 is out of range"),
    ],
)
def test_capacity_scenario_mistakes_are_one_line_errors(tmp_path: Path, extra: str, words: str) -> None:
    with pytest.raises(PlanError) as caught:
        load_plan(write(tmp_path, MINIMAL + CAPACITY + extra + "\n"))
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_closed_loop_keys_are_refused_elsewhere_and_open_keys_on_closed(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"scenarios\.s\.rates: applies to kind 'open' and 'capacity' only"):
        load_plan(write(tmp_path, MINIMAL.replace("concurrency = [1, 4]", "concurrency = [1]\nrates = [5]")))
    with pytest.raises(PlanError, match=r"scenarios\.s\.arrivals: applies to kind 'open' and 'capacity' only"):
        load_plan(write(tmp_path, MINIMAL.replace("concurrency = [1, 4]", 'concurrency = [1]\narrivals = "poisson"')))


def test_extra_repetitions_measure_curves_only(tmp_path: Path) -> None:
    """The extra repetitions follow `repetitions`, measure the curves only, and count in the estimate; a plan
    without a capacity scenario has none to run."""
    text = MINIMAL.replace('scenarios = ["s"]', 'scenarios = ["s", "cap"]') + CAPACITY
    base = load_plan(write(tmp_path, "repetitions = 6\ncapacity_repetitions = 5\n" + text))
    plan = load_plan(
        write(tmp_path, "repetitions = 6\ncapacity_repetitions = 5\ncapacity_extra_repetitions = 3\n" + text)
    )
    assert (base.total_repetitions, plan.total_repetitions) == (6, 9)
    assert base.curve_repetitions() == (1, 2, 3, 4, 5)  # the first after the server start left out
    assert plan.curve_repetitions() == (1, 2, 3, 4, 5, 6, 7, 8)
    closed, _, cap = plan.measurements(plan.models[0])
    assert [rep for rep in range(9) if plan.measures_in(closed, rep)] == list(range(6))
    assert [rep for rep in range(9) if plan.measures_in(cap, rep)] == list(range(1, 9))
    assert (plan.repetitions_of(closed), plan.repetitions_of(cap)) == (6, 8)
    assert estimate_seconds(plan) > estimate_seconds(base)
    restarted = load_plan(
        write(
            tmp_path,
            "restart_every = 3\n"
            + "repetitions = 6\ncapacity_repetitions = 5\n"
            + "capacity_extra_repetitions = 3\n"
            + text,
        )
    )
    # Within the plan's 6: 0 and 3 follow a start, 4 warm for 5 curves, so the first 5 as before; then 3 extra warm
    # ones: 6 and 9 follow a restart, so the run goes on to 10.
    assert restarted.total_repetitions == 11
    assert restarted.curve_repetitions() == (0, 1, 2, 3, 4, 7, 8, 10)
    fewer = load_plan(
        write(tmp_path, "repetitions = 6\ncapacity_repetitions = 3\ncapacity_extra_repetitions = 2\n" + text)
    )
    assert fewer.curve_repetitions() == (1, 2, 3, 6, 7)  # the extra ones are always measured
    no_curves = load_plan(write(tmp_path, "capacity_extra_repetitions = 3\n" + MINIMAL + CAPACITY))
    assert no_curves.total_repetitions == no_curves.repetitions


@pytest.mark.parametrize(
    "knob",
    [
        "slo_p99_ms = 0",
        "capacity_points = 1",
        "capacity_repetitions = 0",
        "traffic_rps = -1",
        "capacity_resolution = -0.1",
        "capacity_extra_repetitions = -1",
        "memory_probe_steps = -1",
        "memory_probe_steps = 1.5",
        "memory_probe_steps = 50001",
    ],
)
def test_bad_capacity_knobs_are_refused(tmp_path: Path, knob: str) -> None:
    with pytest.raises(PlanError, match=knob.split(" ")[0]):
        load_plan(write(tmp_path, knob + "\n" + MINIMAL))


@pytest.mark.parametrize(("resolution", "steps"), [("", 4), ("capacity_resolution = 0.15\n", 5)])
def test_the_estimate_counts_a_capacity_curve_as_several_runs(tmp_path: Path, resolution: str, steps: int) -> None:
    """Four steps of climb, and one midpoint with a resolution (0.15 against the default grid's 1.28x)."""
    closed = load_plan(write(tmp_path, resolution + MINIMAL + CAPACITY))
    text = resolution + MINIMAL.replace('scenarios = ["s"]', 'scenarios = ["s", "cap"]') + CAPACITY
    curve = load_plan(write(tmp_path, text))
    per_step = curve.capacity_warmup_s + curve.capacity_max_step_s / 2 + RUN_OVERHEAD_S
    first_step_extra = (FIRST_STEP_WARMUP_FACTOR - 1) * curve.capacity_warmup_s
    extra = (steps * per_step + first_step_extra) * min(curve.repetitions, curve.capacity_repetitions)
    assert estimate_seconds(curve) - estimate_seconds(closed) == pytest.approx(extra)


# --- errors ----------------------------------------------------------------------------------------


def test_unknown_top_level_key() -> None:
    data = builtin_data() | {"wokers": 2}
    message = plan_error(data)
    assert "unknown key 'wokers'" in message
    assert "workers" in message


def test_unknown_key_in_a_config_names_its_path() -> None:
    data = builtin_data()
    data["configs"]["flask-gunicorn-sync"]["thread"] = 4
    message = plan_error(data)
    assert "configs.flask-gunicorn-sync: unknown key 'thread'" in message
    assert "threads" in message


def test_unknown_key_in_a_preset() -> None:
    data = builtin_data()
    data["presets"]["quick"]["duration"] = 1
    assert "presets.quick: unknown key 'duration'" in plan_error(data)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("configs", "flask-gunicorn-sync", "server"), "gunicorn-foo", "'gunicorn-sync', 'gunicorn-gthread'"),
        (("configs", "fastapi-uvicorn", "framework"), "django", "'fastapi', 'flask'"),
        (("configs", "fastapi-uvicorn", "route"), "sync", "'def', 'async'"),
        (("scenarios", "single", "endpoint"), "/predict/all", "'/predict', '/predict/batch'"),
        (("scenarios", "single", "kind"), "burst", "'closed', 'open'"),
        (("models", "fast", "spec"), "synthetic:cpu=5", "synthetic:cpu_us=N"),
        (("models", "fast", "scenarios"), ["single", "nope"], "'batch32', 'capacity', 'single'"),
    ],
)
def test_bad_choice_lists_the_allowed_values(path: tuple[str, ...], value: object, expected: str) -> None:
    data = builtin_data()
    data[path[0]][path[1]][path[2]] = value
    message = plan_error(data)
    assert ".".join(path) in message
    assert expected in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("warmup_s", "1", "must be a number, found a string"),
        ("repetitions", True, "must be an integer, found a boolean"),
        ("repetitions", 2.5, "must be an integer, found a number"),
        ("repetitions", 0, "out of range (allowed: >= 1"),
        ("duration_s", 0, "out of range (allowed: > 0"),
        ("error_rate_limit", 1.5, "out of range (allowed: >= 0 and <= 1)"),
        ("workers", -1, "out of range"),
    ],
)
def test_bad_knob_type_or_range(key: str, value: object, expected: str) -> None:
    message = plan_error(builtin_data() | {key: value})
    assert f"p.toml: {key}: " in message
    assert expected in message


def test_route_is_a_fastapi_option_and_threads_a_gthread_option() -> None:
    data = builtin_data()
    data["configs"]["flask-gunicorn-sync"]["route"] = "def"
    assert "configs.flask-gunicorn-sync.route: applies to framework 'fastapi'," in plan_error(data)
    data = builtin_data()
    data["configs"]["fastapi-uvicorn"]["threads"] = 4
    assert "configs.fastapi-uvicorn.threads: applies to server 'gunicorn-gthread', 'granian' only" in plan_error(data)
    data["configs"]["fastapi-uvicorn"]["server"] = "granian"  # Granian's threads knob is for WSGI apps only
    assert "configs.fastapi-uvicorn: threads does not apply to fastapi on granian" in plan_error(data)


def test_single_row_endpoint_takes_batch_size_one() -> None:
    data = builtin_data()
    data["scenarios"]["single"]["batch_size"] = 8
    assert "scenarios.single.batch_size: must be 1" in plan_error(data)


def test_concurrency_lists_are_checked() -> None:
    for bad in ([], [0], [4, 4], "8", [1.5]):
        data = builtin_data()
        data["scenarios"]["single"]["concurrency"] = bad
        assert "scenarios.single.concurrency" in plan_error(data)


def test_sections_must_be_non_empty_tables() -> None:
    data = builtin_data() | {"configs": {}}
    assert "configs: must be a non-empty table" in plan_error(data)
    data = builtin_data() | {"models": {"m": "fast"}}
    assert "models.m: must be a table, found a string" in plan_error(data)


def test_unknown_preset() -> None:
    assert "preset 'fastest' is not one of 'default', 'quick'" in plan_error(builtin_data(), preset="fastest")


def test_parse_plan_returns_a_frozen_plan() -> None:
    plan = parse_plan(builtin_data(), preset="quick", source="p.toml")
    assert isinstance(plan, Plan)
    with pytest.raises(AttributeError):
        plan.seed = 1  # type: ignore[misc]


def test_the_queueing_check_example_plan_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "queueing-check.toml"
    plan = load_plan(example)
    (model,) = plan.models
    runs = plan.measurements(model)
    assert [(m.kind, m.arrivals) for m in runs[1:]] == [("capacity", "poisson"), ("capacity", "constant")]
    assert runs[0].kind == "closed" and (runs[0].concurrency or 0) >= 2  # the service-time probe keeps it busy
    assert [c.server for c in plan.configs] == ["gunicorn-sync"] and plan.workers == 1  # one server: M/D/1 applies


def test_the_curves_leave_out_the_first_repetition_after_each_server_start() -> None:
    default = load_plan()
    assert default.curve_repetitions() == tuple(range(1, 1 + default.capacity_repetitions))
    rigorous = replace(load_plan(None, "rigorous"), repetitions=20, restart_every=5, capacity_repetitions=10)
    assert rigorous.curve_repetitions() == (1, 2, 3, 4, 6, 7, 8, 9, 11, 12)
    # no room to leave a repetition out: the first ones, as many as asked
    assert replace(default, repetitions=6, capacity_repetitions=6).curve_repetitions() == tuple(range(6))
    assert load_plan(None, "quick").curve_repetitions() == (0,)
    [capacity] = [m for model in default.models for m in default.measurements(model) if m.kind == "capacity"]
    assert [rep for rep in range(default.repetitions) if default.measures_in(capacity, rep)] == list(range(1, 10))
