"""The capacity search on fake measures (bracket, bisect, confirm, budget), the step judge and the bundle entry."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servingbench.harness.capacity import (
    DEFAULT_START_RPS,
    GENERATOR_LIMIT,
    PEAK_GROWTH,
    PEAK_START_FRACTION,
    STEP_OVERHEAD_S,
    CapacityResult,
    CapacityStep,
    SearchInterrupted,
    SearchSettings,
    SearchStopped,
    StepSettings,
    estimate_search_s,
    judge_step,
    partial_result,
    search_capacity,
    settings_from_peak,
    step_spec,
    theory_rps,
    wait_until_idle,
)
from servingbench.harness.loadgen import LatencyHistograms, LoadResult
from servingbench.harness.queueing import dd1_capacity_rps, md1_rate_for_quantile
from servingbench.loadtests import new_histogram
from servingbench.loadtests.openloop import OpenLoopCounts

TOLERANCE = 0.05


class Threshold:
    """A server whose steps pass exactly up to `capacity` requests/s; notes the rates it was asked."""

    def __init__(self, capacity: float, flaky: Iterable[float] = ()) -> None:
        self.capacity = capacity
        self.flaky = set(flaky)  # rates that pass once, then fail when measured again
        self.rates: list[float] = []

    def __call__(self, rate: float) -> CapacityStep:
        ok = rate <= self.capacity and not (rate in self.flaky and rate in self.rates)
        self.rates.append(rate)
        return CapacityStep(rate=rate, ok=ok, p99_ms=10.0 if ok else 99.0, error_rate=0.0)


def _search(measure: Callable[[float], CapacityStep], **changes: float | int | bool) -> tuple[float | None, bool]:
    result = search_capacity(measure, SearchSettings(**{"tolerance": TOLERANCE, **changes}))  # type: ignore[arg-type]
    return result.capacity_rps, result.converged


def test_brackets_by_doubling_then_bisects_and_confirms() -> None:
    server = Threshold(56.0)
    result = search_capacity(server, SearchSettings(start_rps=10.0, tolerance=TOLERANCE))
    assert server.rates[:4] == [10.0, 20.0, 40.0, 80.0]
    assert result.converged and result.capacity_rps is not None
    assert 56.0 / (1 + TOLERANCE) <= result.capacity_rps <= 56.0
    assert server.rates[-1] == result.capacity_rps  # the last step re-measured the answer
    assert [s.rate for s in result.steps] == server.rates


def test_a_start_above_capacity_halves_down() -> None:
    server = Threshold(30.0)
    capacity, converged = _search(server, start_rps=200.0)
    assert server.rates[:4] == [200.0, 100.0, 50.0, 25.0]
    assert converged and capacity is not None and 30.0 / (1 + TOLERANCE) <= capacity <= 30.0


def test_nothing_passing_gives_no_capacity() -> None:
    capacity, converged = _search(Threshold(0.1), start_rps=8.0, min_rps=1.0)
    assert (capacity, converged) == (None, False)


def test_everything_passing_stops_at_the_maximum_with_a_lower_bound() -> None:
    result = search_capacity(Threshold(1e9), SearchSettings(start_rps=10.0, max_rps=100.0))
    assert (result.capacity_rps, result.converged) == (80.0, False)
    assert "maximum" in result.stop_reason


def test_a_spent_budget_leaves_a_lower_bound() -> None:
    server = Threshold(1000.0)
    result = search_capacity(server, SearchSettings(start_rps=1.0, max_steps=5))
    assert len(server.rates) == 5
    assert not result.converged and result.capacity_rps is not None and result.capacity_rps <= 1000.0


def test_a_pass_that_fails_its_confirmation_moves_the_answer_down() -> None:
    first = Threshold(56.0)
    capacity_first, _ = _search(first, start_rps=10.0)
    assert capacity_first is not None
    flaky = Threshold(56.0, flaky=[capacity_first])
    capacity, converged = _search(flaky, start_rps=10.0)
    assert converged and capacity is not None and capacity < capacity_first
    assert flaky.rates.count(capacity_first) == 2 and flaky.rates.count(capacity) >= 2


@settings(max_examples=200, deadline=None)
@given(
    true_capacity=st.floats(min_value=1.5, max_value=50_000.0),
    start=st.floats(min_value=1.0, max_value=10_000.0),
)
def test_the_search_always_lands_within_tolerance_below_a_sharp_capacity(true_capacity: float, start: float) -> None:
    server = Threshold(true_capacity)
    capacity, converged = _search(server, start_rps=start, max_steps=40)
    assert converged and capacity is not None
    assert true_capacity / (1 + TOLERANCE) <= capacity <= true_capacity


# ---- judging one open-loop result ----


def _result(
    *,
    latency_ms: float = 20.0,
    requests: int = 1000,
    errors: int = 0,
    dropped: int = 0,
    late: int = 0,
    send_lag_p99_ms: float | None = None,
) -> LoadResult:
    total, uncorrected = new_histogram(), new_histogram()
    for _ in range(requests):
        total.record_value(round(latency_ms * 1000))
        uncorrected.record_value(round(latency_ms * 1000))
    counts = OpenLoopCounts(
        scheduled=requests + dropped,
        dropped=dropped,
        late=late,
        sent_in_window=requests,
        send_lag_p99_ms=send_lag_p99_ms,
    )
    return LoadResult(
        requests=requests,
        errors=errors,
        errors_by_kind={"HTTP 503": errors} if errors else {},
        warmup_s=1.0,
        duration_s=10.0,
        rps=requests / 10.0,
        histograms=LatencyHistograms(
            total=total, validate=new_histogram(), predict=new_histogram(), total_uncorrected=uncorrected
        ),
        generator_cpu_s=1.0,
        generator_cpu_pct=10.0,
        workers={},
        open_loop=counts,
    )


def test_a_step_within_the_slo_passes() -> None:
    step = judge_step(100.0, _result(), slo_p99_ms=50.0, run="r0007")
    assert step.ok and step.reason is None
    assert step.p99_ms == pytest.approx(20.0, rel=1e-3)
    assert (step.error_rate, step.achieved_rps, step.late, step.dropped, step.run) == (0.0, 100.0, 0, 0, "r0007")


@pytest.mark.parametrize(
    ("result", "words"),
    [
        (_result(latency_ms=60.0), "over the SLO"),
        (_result(errors=11), "error rate"),
        (_result(dropped=1), "dropped"),
        (_result(late=11, send_lag_p99_ms=8.0), "send lag"),
        (_result(requests=0), "no request"),
    ],
    ids=["slow", "errors", "dropped", "late", "empty"],
)
def test_the_stability_rule_fails_a_step(result: LoadResult, words: str) -> None:
    step = judge_step(100.0, result, slo_p99_ms=50.0)
    assert not step.ok
    assert step.reason is not None and words in step.reason


def test_caller_gates_fail_a_step() -> None:
    step = judge_step(100.0, _result(), invalid_reasons=["load generator saturated (97% CPU)"])
    assert not step.ok and step.reason == "load generator saturated (97% CPU)"


def test_bundle_entry_has_the_documented_keys() -> None:
    result = search_capacity(Threshold(56.0), SearchSettings(start_rps=10.0))
    entry = result.to_json(config="flask-gunicorn-sync", model="sleep10", repetition=1)
    assert {"config", "model", "repetition", "slo_p99_ms", "capacity_rps", "steps"} <= set(entry)
    assert entry["capacity_rps"] == pytest.approx(result.capacity_rps, abs=1e-3)
    for step in entry["steps"]:
        assert {"rate", "p99_ms", "error_rate", "ok", "run", "achieved_rps", "late", "dropped"} <= set(step)


def test_step_spec_sizes_the_run_and_the_inflight_cap() -> None:
    step = StepSettings(min_requests=2000, min_duration_s=5.0, max_duration_s=30.0, warmup_s=2.0)
    slow = step_spec(base_url="http://127.0.0.1:1", endpoint="/predict", payload=b"{}", rate=10.0, seed=1, step=step)
    fast = step_spec(base_url="http://127.0.0.1:1", endpoint="/predict", payload=b"{}", rate=5000.0, seed=1, step=step)
    middle = step_spec(base_url="http://127.0.0.1:1", endpoint="/predict", payload=b"{}", rate=100.0, seed=1, step=step)
    assert (slow.duration_s, fast.duration_s, middle.duration_s) == (30.0, 5.0, 20.0)
    assert slow.kind == "open" and slow.arrivals == "poisson" and slow.warmup_s == 2.0
    assert slow.users == 64 and fast.users == 1000  # 5000 /s x 50 ms x 4


def test_the_worst_case_duration_counts_every_step_at_full_length() -> None:
    settings = SearchSettings(max_steps=4)
    step = StepSettings(warmup_s=1.0, max_duration_s=10.0)
    assert estimate_search_s(settings, step) == 4 * (1.0 + 10.0 + STEP_OVERHEAD_S)


def test_a_step_failing_only_on_the_generator_is_generator_limited() -> None:
    late = judge_step(100.0, _result(late=11, send_lag_p99_ms=8.0), slo_p99_ms=50.0)
    saturated = judge_step(100.0, _result(), invalid_reasons=["load generator saturated (97% CPU)"])
    assert not late.ok and late.generator_limited
    assert not saturated.ok and saturated.generator_limited


@pytest.mark.parametrize(
    "result",
    [
        _result(latency_ms=60.0, late=11, send_lag_p99_ms=8.0),
        _result(dropped=1),
        _result(errors=11, late=11, send_lag_p99_ms=8.0),
    ],
    ids=["slow-and-late", "dropped", "errors-and-late"],
)
def test_a_step_the_server_failed_is_not_generator_limited(result: LoadResult) -> None:
    step = judge_step(100.0, result, slo_p99_ms=50.0)
    assert not step.ok and not step.generator_limited


def _step(rate: float, ok: bool, *, generator: bool = False) -> CapacityStep:
    return CapacityStep(rate=rate, ok=ok, p99_ms=None, error_rate=0.0, generator_limited=generator)


def test_capacity_is_a_generator_lower_bound_only_when_every_failure_above_it_was_the_generator() -> None:
    def result(*steps: CapacityStep) -> CapacityResult:
        return CapacityResult(50.0, 100.0, steps, True, "done")

    below = _step(50.0, False)  # a failure below the capacity (a flaky step) says nothing about the top
    assert result(below, _step(100.0, True), _step(110.0, False, generator=True)).limited_by == GENERATOR_LIMIT
    assert result(_step(100.0, True), _step(110.0, False, generator=True), _step(120.0, False)).limited_by is None
    assert result(_step(100.0, True)).limited_by is None
    assert (
        result(_step(100.0, True), _step(110.0, False, generator=True)).to_json(config="c", model="m", repetition=0)[
            "limited_by"
        ]
        == GENERATOR_LIMIT
    )


def test_from_a_measured_peak_the_search_starts_below_it_and_brackets_tightly() -> None:
    settings = settings_from_peak(1000.0, start_rps=None, tolerance=0.05, max_steps=8)
    assert settings.start_rps == pytest.approx(1000.0 * PEAK_START_FRACTION)
    assert settings.growth == PEAK_GROWTH
    server = Threshold(930.0)
    result = search_capacity(server, settings)
    assert server.rates[:2] == pytest.approx([800.0, 1000.0])  # one raise of 1.25 brackets it
    assert result.converged and result.capacity_rps is not None
    assert 930.0 / 1.05 <= result.capacity_rps <= 930.0
    assert len(server.rates) <= 6


def test_past_a_peak_the_search_keeps_raising_by_the_growth_factor_never_doubling() -> None:
    """Twice a server's capacity would leave a backlog and a heap the next steps measure."""
    server = Threshold(1500.0)
    search_capacity(server, settings_from_peak(1000.0, start_rps=None, tolerance=0.05, max_steps=10))
    assert server.rates[:4] == pytest.approx([800.0, 1000.0, 1250.0, 1562.5])


def test_an_explicit_start_or_no_peak_starts_from_a_guess_and_doubles() -> None:
    given = settings_from_peak(1000.0, start_rps=30.0, tolerance=0.05, max_steps=8)
    guess = settings_from_peak(None, start_rps=None, tolerance=0.05, max_steps=8)
    assert (given.start_rps, given.growth) == (30.0, 2.0)
    assert (guess.start_rps, guess.growth) == (DEFAULT_START_RPS, 2.0)


def test_the_search_asks_for_rounded_rates() -> None:
    server = Threshold(97.3)
    search_capacity(server, SearchSettings(start_rps=10.0, tolerance=0.01))
    assert all(rate == float(f"{rate:.6g}") for rate in server.rates)


def test_a_search_cut_short_keeps_the_highest_consistent_pass_as_a_lower_bound() -> None:
    steps = [_step(100.0, True), _step(200.0, False), _step(150.0, True)]
    result = partial_result(steps, "server died", slo_p99_ms=50.0, arrivals="constant")
    assert (result.capacity_rps, result.converged, result.stop_reason) == (150.0, False, "server died")
    assert result.arrivals == "constant" and len(result.steps) == 3


def test_theory_is_md1_for_poisson_and_1_over_service_for_constant_arrivals() -> None:
    poisson, constant = theory_rps("poisson", 0.010, 50.0), theory_rps("constant", 0.010, 50.0)
    assert poisson[0] == "M/D/1" and poisson[1] == pytest.approx(md1_rate_for_quantile(target_s=0.05, service_s=0.010))
    assert constant[0] == "D/D/1" and constant[1] == pytest.approx(dd1_capacity_rps(service_s=0.010))
    assert 50.0 < theory_rps("poisson", 0.010, 50.0)[1] < 60.0  # the "about 56 requests/s" for 10 ms


def test_a_p99_over_the_slo_from_the_actual_sends_too_is_the_servers_failure() -> None:
    lagging = judge_step(100.0, _result(latency_ms=80.0, late=11, send_lag_p99_ms=10.0), slo_p99_ms=50.0)
    on_time = judge_step(100.0, _result(latency_ms=55.0, send_lag_p99_ms=1.0), slo_p99_ms=50.0)
    assert not lagging.ok and not lagging.generator_limited  # the service time alone was 80 ms: the server's
    assert not on_time.ok and not on_time.generator_limited  # a lag within a tenth of the SLO excuses nothing


def test_late_sends_with_a_lag_small_against_the_slo_do_not_void_a_step() -> None:
    """A fixed handful of sends a few ms late is 3% of a short low-rate step, and still nothing at a 50 ms SLO."""
    step = judge_step(100.0, _result(requests=200, late=6, send_lag_p99_ms=3.0), slo_p99_ms=50.0)
    assert step.ok and not step.generator_limited
    strict = judge_step(100.0, _result(requests=200, late=6, send_lag_p99_ms=3.0), slo_p99_ms=25.0)
    assert not strict.ok and strict.generator_limited  # at a 25 ms SLO, 3 ms is more than a tenth


def test_from_a_peak_a_failing_rate_steps_down_by_the_growth_factor_first_then_halves() -> None:
    server = Threshold(300.0)
    search_capacity(server, settings_from_peak(1000.0, start_rps=None, tolerance=0.05, max_steps=10))
    assert server.rates[:4] == pytest.approx([800.0, 640.0, 320.0, 160.0])


def test_a_failed_confirmation_near_the_knee_steps_down_locally() -> None:
    """Noise at the knee: 1000 passes once, then fails its confirmation; the search retries just below it."""
    server = Threshold(1000.0, flaky=[1000.0])
    result = search_capacity(server, SearchSettings(start_rps=1000.0, tolerance=0.05, max_steps=12, growth=1.25))
    confirmation = server.rates.index(1000.0, 1)
    assert server.rates[confirmation + 1] == 800.0  # one step of 1.25 below it, not half of it
    assert result.converged and result.capacity_rps is not None
    assert 1000.0 / 1.25 <= result.capacity_rps < 1000.0


def test_a_measure_can_stop_the_search_and_its_last_step_is_kept() -> None:
    calls: list[float] = []

    def measure(rate: float) -> CapacityStep:
        calls.append(rate)
        step = _step(rate, rate <= 30.0)
        if len(calls) == 3:
            raise SearchStopped("server died during the search (r0003)", step)
        return step

    result = search_capacity(measure, SearchSettings(start_rps=10.0))
    assert [step.rate for step in result.steps] == [10.0, 20.0, 40.0]
    assert (result.capacity_rps, result.converged) == (20.0, False)
    assert result.stop_reason == "server died during the search (r0003)"


def test_ctrl_c_during_a_search_carries_what_it_measured() -> None:
    def measure(rate: float) -> CapacityStep:
        if rate > 20.0:
            raise KeyboardInterrupt
        return _step(rate, True)

    with pytest.raises(SearchInterrupted) as caught:
        search_capacity(measure, SearchSettings(start_rps=10.0))
    assert isinstance(caught.value, KeyboardInterrupt)
    result = caught.value.result
    assert [step.rate for step in result.steps] == [10.0, 20.0]
    assert (result.capacity_rps, result.converged, result.stop_reason) == (20.0, False, "interrupted (Ctrl-C)")


def test_an_error_rate_at_the_limit_passes_as_a_run_at_the_limit_is_valid() -> None:
    at_limit = judge_step(100.0, _result(requests=1000, errors=10), max_error_rate=0.01)
    over = judge_step(100.0, _result(requests=1000, errors=11), max_error_rate=0.01)
    assert at_limit.ok and not over.ok and over.reason is not None and "error rate" in over.reason


def test_a_p99_over_the_slo_only_because_of_late_sends_is_the_generators() -> None:
    """Counted from the actual sends the server met the SLO; from the intended ones, lateness pushed it over."""
    result = _result(latency_ms=55.0, late=50, send_lag_p99_ms=12.0)
    uncorrected = result.histograms.total_uncorrected
    uncorrected.reset()
    uncorrected.record_value(40_000, 1000)
    step = judge_step(100.0, result, slo_p99_ms=50.0)
    assert not step.ok and step.generator_limited


def test_the_start_from_a_peak_is_a_rounded_rate() -> None:
    settings = settings_from_peak(1234.5678, start_rps=None, tolerance=0.05, max_steps=8)
    assert settings.start_rps == float(f"{1234.5678 * PEAK_START_FRACTION:.6g}")


BURN_AND_REST = """
import pathlib, sys, time
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    pass
pathlib.Path(sys.argv[1]).write_text("rested")
time.sleep(60)
"""


class _Health(http.server.BaseHTTPRequestHandler):
    slow_answers = 0  # this many answers come after SLOW_ANSWER_S: a server still working off its queue
    answered = 0

    def do_GET(self) -> None:
        type(self).answered += 1
        if type(self).answered <= type(self).slow_answers:
            time.sleep(SLOW_ANSWER_S)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


SLOW_ANSWER_S = 0.2  # over the 50 ms idle threshold


@pytest.fixture
def health() -> Iterator[tuple[str, type[_Health]]]:
    handler = type("Health", (_Health,), {"slow_answers": 0, "answered": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_still_burning_cpu_is_not_idle_until_it_stops(
    tmp_path: Path, health: tuple[str, type[_Health]]
) -> None:
    """An async server answers /healthz between queued requests: busy CPU is not idle, whatever the probe says."""
    flag = tmp_path / "rested"
    burner = subprocess.Popen([sys.executable, "-c", BURN_AND_REST, str(flag), "0.6"])
    try:
        assert wait_until_idle(health[0], pid=burner.pid, timeout_s=30.0)
        assert flag.exists()  # it reported idle only after the busy loop was over
    finally:
        burner.kill()
        burner.wait()


def test_a_quiet_server_that_still_answers_slowly_is_not_idle(
    tmp_path: Path, health: tuple[str, type[_Health]]
) -> None:
    """A sync worker working off a queue of sleeping requests burns no CPU: its slow probe answers tell."""
    url, handler = health
    handler.slow_answers = 3
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert wait_until_idle(url, pid=sleeper.pid, timeout_s=30.0)
        assert handler.answered == handler.slow_answers + 1  # idle only at the first answer within 50 ms
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_server_that_never_stops_working_is_reported_not_idle(
    tmp_path: Path, health: tuple[str, type[_Health]]
) -> None:
    burner = subprocess.Popen([sys.executable, "-c", BURN_AND_REST, str(tmp_path / "rested"), "60"])
    try:
        assert not wait_until_idle(health[0], pid=burner.pid, timeout_s=0.5)
    finally:
        burner.kill()
        burner.wait()
