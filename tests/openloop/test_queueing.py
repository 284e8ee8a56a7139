"""M/D/1 and D/D/1 formulas against closed forms, the Pollaczek-Khinchine mean, and a Lindley-recursion simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.integrate import quad

from servingbench.harness.queueing import (
    dd1_capacity_rps,
    md1_mean_wait_s,
    md1_rate_for_quantile,
    md1_time_in_system_quantile_s,
    md1_wait_cdf,
    md1_wait_quantile_s,
)

SERVICE_S = 0.010
SLO_S = 0.050
RATE_FOR_50MS_P99 = 56.078
"""The M/D/1 rate whose p99 time in system is 50 ms for a 10 ms service time (the issue's "about 56 /s")."""
SIMULATED_ARRIVALS = 2_000_000


@pytest.mark.parametrize("rho", [0.1, 0.5, 0.9])
def test_cdf_closed_forms_below_one_service_time(rho: float) -> None:
    rate = rho / SERVICE_S
    assert md1_wait_cdf(0.0, rate=rate, service_s=SERVICE_S) == pytest.approx(1 - rho)  # idle on arrival
    t = 0.3 * SERVICE_S
    assert md1_wait_cdf(t, rate=rate, service_s=SERVICE_S) == pytest.approx((1 - rho) * math.exp(rate * t))
    assert md1_wait_cdf(SERVICE_S, rate=rate, service_s=SERVICE_S) == pytest.approx((1 - rho) * math.exp(rho))
    assert md1_wait_cdf(-1.0, rate=rate, service_s=SERVICE_S) == 0.0


@pytest.mark.parametrize("rho", [0.2, 0.56, 0.8, 0.95])
def test_cdf_integrates_to_the_pollaczek_khinchine_mean(rho: float) -> None:
    rate = rho / SERVICE_S
    horizon = SERVICE_S * 400  # far beyond the 1e-12 tail at these loads

    def tail(t: float) -> float:
        return 1.0 - md1_wait_cdf(t, rate=rate, service_s=SERVICE_S)

    kinks = [k * SERVICE_S for k in range(1, 40)]
    mean, _ = quad(tail, 0.0, horizon, points=kinks, limit=500)
    assert mean == pytest.approx(md1_mean_wait_s(rate=rate, service_s=SERVICE_S), rel=1e-6)


@pytest.mark.parametrize("rho", [0.3, 0.7, 0.9, 0.99])
def test_exact_sum_and_exponential_tail_agree_where_they_hand_over(rho: float) -> None:
    from servingbench.harness.queueing import MAX_EXACT_TERMS, _md1_tail

    rate = rho / SERVICE_S
    for units in (30.4, MAX_EXACT_TERMS - 1.6):
        t = units * SERVICE_S
        exact_tail = 1.0 - md1_wait_cdf(t, rate=rate, service_s=SERVICE_S)
        asymptote = _md1_tail(t, rate=rate, service_s=SERVICE_S)
        assert exact_tail == pytest.approx(asymptote, rel=1e-6, abs=1e-13)


def test_cdf_is_monotone_and_reaches_one() -> None:
    rate = 0.8 / SERVICE_S
    values = [md1_wait_cdf(k * SERVICE_S / 7, rate=rate, service_s=SERVICE_S) for k in range(0, 1200)]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))
    assert values[-1] == pytest.approx(1.0, abs=1e-9)


def test_p99_for_10ms_service_and_50ms_target() -> None:
    rate = md1_rate_for_quantile(target_s=SLO_S, service_s=SERVICE_S)
    assert rate == pytest.approx(RATE_FOR_50MS_P99, abs=0.01)
    assert md1_time_in_system_quantile_s(rate=rate, service_s=SERVICE_S) == pytest.approx(SLO_S, rel=1e-8)
    assert md1_time_in_system_quantile_s(rate=0.9 * rate, service_s=SERVICE_S) < SLO_S


def test_quantiles_match_a_simulated_md1_queue() -> None:
    rate = RATE_FOR_50MS_P99
    rng = np.random.default_rng(20261124)
    gaps = rng.exponential(1 / rate, SIMULATED_ARRIVALS)
    # Lindley: W_n = S_n - min(0, min_k<=n S_k), S_n the running sum of (service - gap).
    walk = np.cumsum(SERVICE_S - gaps)
    waits = walk - np.minimum(np.minimum.accumulate(walk), 0.0)
    for quantile in (0.5, 0.9, 0.99):
        simulated = float(np.quantile(waits, quantile))
        assert simulated == pytest.approx(md1_wait_quantile_s(quantile, rate=rate, service_s=SERVICE_S), rel=0.03)


def test_light_load_waits_nothing_at_the_quantile() -> None:
    assert md1_wait_quantile_s(0.99, rate=0.5, service_s=SERVICE_S) == 0.0  # rho 0.005: 99.5% find it idle


def test_a_target_at_or_below_the_service_time_gives_no_capacity() -> None:
    assert md1_rate_for_quantile(target_s=SERVICE_S, service_s=SERVICE_S) == 0.0


def test_fast_services_solve_quickly_through_the_tail() -> None:
    rate = md1_rate_for_quantile(target_s=SLO_S, service_s=0.0002)
    assert 0.95 / 0.0002 < rate < 1 / 0.0002
    assert md1_time_in_system_quantile_s(rate=rate, service_s=0.0002) == pytest.approx(SLO_S, rel=1e-6)


def test_dd1_capacity_is_one_over_service_time() -> None:
    assert dd1_capacity_rps(service_s=SERVICE_S) == pytest.approx(100.0)


@pytest.mark.parametrize(("rate", "service_s"), [(100.0, SERVICE_S), (200.0, SERVICE_S), (-1.0, SERVICE_S), (1.0, 0.0)])
def test_unstable_or_meaningless_queues_are_refused(rate: float, service_s: float) -> None:
    with pytest.raises(ValueError):
        md1_wait_cdf(0.01, rate=rate, service_s=service_s)
