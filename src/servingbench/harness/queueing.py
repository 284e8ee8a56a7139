"""Queueing theory for one server with a fixed service time: what capacity at a latency target should be.

M/D/1 (Poisson arrivals at rate λ, deterministic service time D, one server, first come first served): the waiting
time W has the exact distribution of Erlang (1909) and Crommelin (1932),

    P(W <= t) = (1 - rho) · Σ_{k=0}^{⌊t/D⌋} e^{λ(t - kD)} · (-λ(t - kD))^k / k!,  rho = λD < 1,

and the time in system is W + D. The sum alternates and its terms grow like e^{2λt}, so it is evaluated in exact
decimal arithmetic with enough digits; past `MAX_EXACT_TERMS` terms the Cramér-Lundberg tail
P(W > t) ~ C e^{-θt} (θ > 0 solving λ(e^{θD} - 1) = θ, C = (1 - rho) / (λ D e^{θD} - 1)) takes over, which is
accurate to better than 1e-9 that deep in the tail. D/D/1 (constant spacing): nobody ever waits while λ < 1/D, so the
capacity is 1/D whatever the target. Units: seconds and requests per second throughout.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

from scipy.optimize import brentq

__all__ = [
    "DEFAULT_QUANTILE",
    "dd1_capacity_rps",
    "md1_mean_wait_s",
    "md1_rate_for_quantile",
    "md1_time_in_system_quantile_s",
    "md1_wait_cdf",
    "md1_wait_quantile_s",
]

DEFAULT_QUANTILE = 0.99
"""The latency target is on the 99th percentile of time in system."""
MAX_EXACT_TERMS = 200
"""Up to this many terms (t/D + 1) the exact sum is used; beyond, the exponential tail, which agrees with the sum
to better than 1e-9 (relative) from about 30 D on (the tests check it); the sum's cost grows with t/D squared."""
GUARD_DIGITS = 30
"""Decimal digits kept beyond the cancellation the alternating sum suffers (terms reach about e^{2λt})."""
ROOT_XTOL = 1e-12
"""Absolute tolerance of the root finders, in the unit searched (seconds or requests/s)."""
ROOT_RTOL = 1e-10
MAX_BRACKET_DOUBLINGS = 200


def _check(rate: float, service_s: float) -> float:
    if not (math.isfinite(service_s) and service_s > 0):
        raise ValueError(f"service time must be > 0 s, got {service_s}")
    if not (math.isfinite(rate) and rate >= 0):
        raise ValueError(f"arrival rate must be >= 0 requests/s, got {rate}")
    rho = rate * service_s
    if rho >= 1:
        raise ValueError(f"unstable queue: utilisation {rho:.4f} >= 1 (rate {rate} /s, service {service_s} s)")
    return rho


def md1_wait_cdf(t_s: float, *, rate: float, service_s: float) -> float:
    """P(W <= `t_s`) for the M/D/1 waiting time (before service); `rate` in requests/s, times in seconds.

    Has an atom of 1 - rho at 0 (arrivals that find the server idle); continuous and increasing after that.
    """
    rho = _check(rate, service_s)
    if t_s < 0:
        return 0.0
    if rate == 0:
        return 1.0
    terms = math.floor(t_s / service_s) + 1
    if terms > MAX_EXACT_TERMS:
        return 1.0 - _md1_tail(t_s, rate=rate, service_s=service_s)
    return min(1.0, max(0.0, (1.0 - rho) * _crommelin_sum(t_s, rate, service_s, terms)))


def _crommelin_sum(t_s: float, rate: float, service_s: float, terms: int) -> float:
    """Σ_{k<terms} e^{λ(t-kD)} (-λ(t-kD))^k / k!, in decimal arithmetic (inputs taken as their exact binary values)."""
    with localcontext() as ctx:
        ctx.prec = math.ceil(2 * rate * t_s / math.log(10)) + GUARD_DIGITS
        lam, t, d = Decimal(rate), Decimal(t_s), Decimal(service_s)
        growth = (lam * t).exp()  # e^{λ(t - kD)} = e^{λt} · (e^{-λD})^k
        decay = (-lam * d).exp()
        total, factorial = Decimal(0), Decimal(1)
        for k in range(terms):
            if k:
                factorial *= k
                growth *= decay
            x = lam * (t - k * d)
            power = (-x) ** k if k else Decimal(1)  # Decimal refuses 0 ** 0
            total += growth * power / factorial
        return float(total)


def _md1_tail(t_s: float, *, rate: float, service_s: float) -> float:
    """Cramér-Lundberg asymptote of P(W > t) for M/D/1 (see the module docstring)."""
    theta = _adjustment_coefficient(rate, service_s)
    rho = rate * service_s
    constant = (1.0 - rho) / (rate * service_s * math.exp(theta * service_s) - 1.0)
    return constant * math.exp(-theta * t_s)


def _adjustment_coefficient(rate: float, service_s: float) -> float:
    """The θ > 0 with λ(e^{θD} - 1) = θ (exists because rho < 1)."""

    def gap(theta: float) -> float:
        return rate * math.expm1(theta * service_s) - theta

    high = 1.0 / service_s
    for _ in range(MAX_BRACKET_DOUBLINGS):
        if gap(high) > 0:
            break
        high *= 2
    low = high / 2
    while gap(low) > 0 and low > ROOT_XTOL:  # the positive root lies where gap turns from negative to positive
        low /= 2
    return float(brentq(gap, low, high, xtol=ROOT_XTOL, rtol=ROOT_RTOL))


def md1_mean_wait_s(*, rate: float, service_s: float) -> float:
    """Mean M/D/1 waiting time, rhoD / (2(1 - rho)) seconds (Pollaczek-Khinchine)."""
    rho = _check(rate, service_s)
    return rho * service_s / (2.0 * (1.0 - rho))


def md1_wait_quantile_s(quantile: float, *, rate: float, service_s: float) -> float:
    """The `quantile` (0 < q < 1) of the M/D/1 waiting time, seconds; 0 if the idle-server atom already covers it."""
    rho = _check(rate, service_s)
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if 1.0 - rho >= quantile:
        return 0.0

    def gap(t_s: float) -> float:
        return md1_wait_cdf(t_s, rate=rate, service_s=service_s) - quantile

    high = service_s
    for _ in range(MAX_BRACKET_DOUBLINGS):
        if gap(high) >= 0:
            break
        high *= 2
    return float(brentq(gap, 0.0, high, xtol=ROOT_XTOL * service_s, rtol=ROOT_RTOL))


def md1_time_in_system_quantile_s(*, rate: float, service_s: float, quantile: float = DEFAULT_QUANTILE) -> float:
    """The `quantile` of M/D/1 time in system (wait + service), seconds: e.g. p99 latency at `rate` requests/s."""
    return md1_wait_quantile_s(quantile, rate=rate, service_s=service_s) + service_s


def md1_rate_for_quantile(*, target_s: float, service_s: float, quantile: float = DEFAULT_QUANTILE) -> float:
    """The arrival rate (requests/s) at which the M/D/1 `quantile` of time in system equals `target_s`.

    The highest Poisson rate meeting the target: about 56.1 /s for D = 10 ms and a 50 ms p99. 0 if `target_s` <=
    `service_s` (not even an idle server meets it).
    """
    _check(0.0, service_s)
    if target_s <= service_s:
        return 0.0

    def gap(rate: float) -> float:
        return md1_time_in_system_quantile_s(rate=rate, service_s=service_s, quantile=quantile) - target_s

    low, high = 0.0, 0.5 / service_s  # gap(0) = D - target < 0; walk the upper end towards 1/D until it turns
    for _ in range(MAX_BRACKET_DOUBLINGS):
        if gap(high) >= 0:
            break
        low, high = high, (high + 1.0 / service_s) / 2
    return float(brentq(gap, low, high, xtol=ROOT_XTOL, rtol=ROOT_RTOL))


def dd1_capacity_rps(*, service_s: float) -> float:
    """D/D/1 capacity, 1/`service_s` requests/s: with constant spacing below it no request waits, above it the queue
    grows without bound (so any latency target above `service_s` gives the same capacity)."""
    _check(0.0, service_s)
    return 1.0 / service_s
