"""Coverage of the interval methods on simulated repetitions with known answers (acceptance for issue 11).

The noise is modelled on what was measured on the 2-core VM the project runs on: the per-repetition log ratio of
two identical configs has a standard deviation of about 0.20, and the CPU speed is at times two-level (a spin loop
runs 0.13 s or 0.092 s), so a run is either at full speed or about 29 % slower, with some jitter on top. Every
simulation is vectorised with numpy and seeded, so the figures are exact and the file runs in a few seconds.

Checked at the repetition counts plans use (5, 6, 10, 20): the uncorrected paired t interval covers the true ratio
within 2 points of 95 % (lognormal and realistic two-level noise) and is never liberal by more than 2 points under
any two-level mix; the simultaneous (Bonferroni) family covers every comparison at least 95 % of the time, with a
named reference and with the best chosen from the data; the order-statistic interval of one arm's median covers
within 2 points of the level it states, and at least that level with censored values (below a bound, above one, or
both, as capacity curves censor them).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy import optimize
from scipy import stats as scipy_stats

from servingbench.reports.stats import (
    Family,
    compare_arms,
    log_mean_interval,
    log_ratio_interval,
    median_interval,
    order_statistic_ranks,
)

FloatArray = npt.NDArray[np.float64]

SIMULATIONS = 20_000  # standard error of a 95 % coverage estimate: 0.15 points
REPETITIONS = (5, 6, 10, 20)
NOMINAL = 0.95
TOLERANCE = 0.02  # acceptance: within 2 points of the nominal level
PAIR_SD = 0.20  # measured SD of the per-repetition log ratio of two identical configs
RUN_SD = PAIR_SD / math.sqrt(2.0)
SLOW_STATE = math.log(0.092 / 0.13)  # the two CPU speeds measured with a spin loop
REALISTIC_SLOW_SHARE = 0.2  # with the jitter below: a per-run CV of about 17 % (measured: 12-20 %)
REALISTIC_JITTER = 0.10
TRUE_LOG_RATIO = math.log(0.8)
ARMS = 4
SEED = 20_261_124


def _runs(rng: np.random.Generator, shape: tuple[int, ...], slow_share: float, jitter: float) -> FloatArray:
    """Log speed factors of runs: two-level (full speed or SLOW_STATE) with Gaussian jitter on top."""
    slow = rng.random(shape) < slow_share
    return np.where(slow, SLOW_STATE, 0.0) + rng.normal(0.0, jitter, shape)


def _covered(logs: FloatArray, truth: float | FloatArray, level: float) -> npt.NDArray[np.bool_]:
    low, high = log_ratio_interval(logs, level)
    return np.asarray((low <= truth) & (truth <= high))


def _paired_logs(n: int, slow_share: float, jitter: float, seed: int) -> FloatArray:
    """Per-repetition log ratios arm / reference of an arm truly 0.8x the reference, with drift that pairs cancel."""
    rng = np.random.default_rng(seed)
    drift = rng.normal(0.0, 0.3, (SIMULATIONS, n))  # slow machine drift, shared within a repetition
    arm = TRUE_LOG_RATIO + drift + _runs(rng, (SIMULATIONS, n), slow_share, jitter)
    reference = drift + _runs(rng, (SIMULATIONS, n), slow_share, jitter)
    return np.asarray(arm - reference)


@pytest.mark.parametrize("n", REPETITIONS)
def test_paired_t_covers_within_two_points_with_lognormal_noise(n: int) -> None:
    coverage = _covered(_paired_logs(n, 0.0, RUN_SD, SEED + n), TRUE_LOG_RATIO, NOMINAL).mean()
    assert abs(coverage - NOMINAL) <= TOLERANCE, coverage


@pytest.mark.parametrize("n", REPETITIONS)
def test_paired_t_covers_within_two_points_with_two_level_noise(n: int) -> None:
    logs = _paired_logs(n, REALISTIC_SLOW_SHARE, REALISTIC_JITTER, SEED + 100 + n)
    coverage = _covered(logs, TRUE_LOG_RATIO, NOMINAL).mean()
    assert abs(coverage - NOMINAL) <= TOLERANCE, coverage


@pytest.mark.parametrize("n", REPETITIONS)
@pytest.mark.parametrize("slow_share", [0.05, 0.1, 0.3, 0.5])
@pytest.mark.parametrize("jitter", [0.02, 0.05])
def test_paired_t_is_never_liberal_under_two_level_noise(n: int, slow_share: float, jitter: float) -> None:
    """Nearly pure two-level noise makes many differences exactly 0 or +/-29 %: t is then conservative, not liberal."""
    logs = _paired_logs(n, slow_share, jitter, SEED + 1000 * n + int(slow_share * 100) + int(jitter * 1000))
    assert _covered(logs, TRUE_LOG_RATIO, NOMINAL).mean() >= NOMINAL - TOLERANCE


def _family_covered(values: FloatArray, truth: FloatArray, family: Family, best: bool) -> float:
    """Share of simulations where every arm's interval against the reference covers its true log ratio.

    ``values``: log values (simulation, arm, repetition). The reference is arm 0, or the arm with the best mean.
    """
    rows = np.arange(values.shape[0])
    reference = np.argmax(values.mean(axis=2), axis=1) if best else np.zeros(values.shape[0], dtype=int)
    all_covered = np.ones(values.shape[0], dtype=bool)
    for arm in range(values.shape[1]):
        logs = values[:, arm, :] - values[rows, reference, :]
        covered = _covered(logs, truth[arm] - truth[reference], family.level)
        all_covered &= np.where(reference == arm, True, covered)
    return float(all_covered.mean())


def _arm_values(n: int, truth: FloatArray, slow_share: float, jitter: float, seed: int) -> FloatArray:
    rng = np.random.default_rng(seed)
    drift = rng.normal(0.0, 0.3, (SIMULATIONS, 1, n))
    return np.asarray(truth[None, :, None] + drift + _runs(rng, (SIMULATIONS, truth.size, n), slow_share, jitter))


@pytest.mark.parametrize("n", REPETITIONS)
@pytest.mark.parametrize(("slow_share", "jitter"), [(0.0, RUN_SD), (REALISTIC_SLOW_SHARE, REALISTIC_JITTER)])
def test_the_simultaneous_family_covers_every_comparison(n: int, slow_share: float, jitter: float) -> None:
    """Four arms, three alike and one 0.8x: with the best chosen from the data (all 6 pairs corrected) and with a
    named reference (3 comparisons), all intervals cover their true ratios together at least 95 % of the time."""
    truth = np.array([0.0, 0.0, 0.0, TRUE_LOG_RATIO])
    values = _arm_values(n, truth, slow_share, jitter, SEED + 7 * n + int(slow_share * 10))
    assert _family_covered(values, truth, Family(NOMINAL, ARMS * (ARMS - 1) // 2, "best"), best=True) >= NOMINAL
    assert _family_covered(values, truth, Family(NOMINAL, ARMS - 1, "named"), best=False) >= NOMINAL


def test_correcting_only_k_minus_1_against_a_data_chosen_best_is_liberal() -> None:
    """The winner's curse, shown: four identical arms, the best picked from the data, only 3 comparisons corrected.

    This is why a data-chosen best is corrected over every pair."""
    n, truth = 5, np.zeros(ARMS)
    values = _arm_values(n, truth, 0.0, RUN_SD, SEED + 99)
    too_narrow = _family_covered(values, truth, Family(NOMINAL, ARMS - 1, "named"), best=True)
    assert too_narrow < NOMINAL
    assert _family_covered(values, truth, Family(NOMINAL, 6, "best"), best=True) >= NOMINAL


def test_twins_are_rarely_called_different_through_the_engine() -> None:
    """End to end through compare_arms (not vectorised, so fewer simulations): four identical arms, six repetitions,
    realistic noise; the share of arm-against-best cells called better or worse stays under 5 %."""
    rng = np.random.default_rng(SEED + 5)
    simulations, n, called, cells = 300, 6, 0, 0
    for _ in range(simulations):
        logs = _runs(rng, (ARMS, n), REALISTIC_SLOW_SHARE, REALISTIC_JITTER) + rng.normal(0.0, 0.3, (1, n))
        values = {f"twin{arm}": {rep: 1000.0 * math.exp(logs[arm, rep]) for rep in range(n)} for arm in range(ARMS)}
        verdict = compare_arms(values, higher_is_better=True)
        called += sum(item.outcome in ("better", "worse") for item in verdict.comparisons)
        cells += len(verdict.comparisons)
    assert cells == simulations * (ARMS - 1) and called / cells <= 0.05


def _mixture_median(slow_share: float, jitter: float) -> float:
    """The true median of one run's log speed under the two-level model."""

    def cdf(x: float) -> float:
        fast = scipy_stats.norm.cdf(x / jitter)
        slow = scipy_stats.norm.cdf((x - SLOW_STATE) / jitter)
        return float((1.0 - slow_share) * fast + slow_share * slow) - 0.5

    return float(optimize.brentq(cdf, SLOW_STATE - 1.0, 1.0))


def _median_coverage(sample: FloatArray, truth: float, censor_below: float | None = None) -> tuple[float, float]:
    """Coverage of the order-statistic interval of the median, and the level it states, for samples on axis 1.

    Censored values (below ``censor_below``) enter as the bound for upper ends and as minus infinity for lower
    ends, as :func:`servingbench.reports.stats.median_interval` does.
    """
    n = sample.shape[1]
    rank, level = order_statistic_ranks(n)
    censored = sample < censor_below if censor_below is not None else np.zeros(sample.shape, dtype=bool)
    upper = np.sort(np.where(censored, censor_below if censor_below is not None else 0.0, sample), axis=1)
    lower = np.sort(np.where(censored, -np.inf, sample), axis=1)
    covered = (lower[:, rank - 1] <= truth) & (truth <= upper[:, n - rank])
    return float(covered.mean()), level


@pytest.mark.parametrize("n", REPETITIONS)
@pytest.mark.parametrize(("slow_share", "jitter"), [(0.0, RUN_SD), (REALISTIC_SLOW_SHARE, REALISTIC_JITTER)])
def test_the_median_interval_covers_at_the_level_it_states(n: int, slow_share: float, jitter: float) -> None:
    rng = np.random.default_rng(SEED + 31 * n + int(slow_share * 10))
    sample = _runs(rng, (SIMULATIONS, n), slow_share, jitter)
    coverage, level = _median_coverage(sample, _mixture_median(slow_share, jitter))
    assert abs(coverage - level) <= TOLERANCE, (coverage, level)
    assert level >= NOMINAL or n == min(REPETITIONS)  # 5 values reach only 93.75 %, and say so


@pytest.mark.parametrize("n", REPETITIONS)
def test_the_median_interval_keeps_its_level_with_censored_values(n: int) -> None:
    """Values below the 30th percentile are censored ("below the lowest rate tried")."""
    rng = np.random.default_rng(SEED + 57 * n)
    sample = _runs(rng, (SIMULATIONS, n), REALISTIC_SLOW_SHARE, REALISTIC_JITTER)
    bound = float(np.quantile(_runs(rng, (200_000,), REALISTIC_SLOW_SHARE, REALISTIC_JITTER), 0.3))
    coverage, level = _median_coverage(sample, _mixture_median(REALISTIC_SLOW_SHARE, REALISTIC_JITTER), bound)
    assert coverage >= level - TOLERANCE / 4


CENSORED_SIMULATIONS = 2_000  # median_interval itself, one call per simulated set of repetitions


@pytest.mark.parametrize("n", (5, 6, 10))
def test_the_median_interval_keeps_its_level_censored_on_both_sides(n: int) -> None:
    """Values below the 25th percentile are censored below it, above the 75th above it (a capacity that met the SLO
    nowhere, or everywhere), through :func:`median_interval` itself."""
    rng = np.random.default_rng(SEED + 71 * n)
    population = _runs(rng, (200_000,), REALISTIC_SLOW_SHARE, REALISTIC_JITTER)
    low_bound, high_bound = (float(value) for value in np.quantile(population, (0.25, 0.75)))
    truth = _mixture_median(REALISTIC_SLOW_SHARE, REALISTIC_JITTER)
    covered, level = 0, 0.0
    for sample in _runs(rng, (CENSORED_SIMULATIONS, n), REALISTIC_SLOW_SHARE, REALISTIC_JITTER):
        below, above = sample < low_bound, sample > high_bound
        estimate = median_interval(
            sample[~below & ~above], censored_below=[low_bound] * int(below.sum()),
            censored_above=[high_bound] * int(above.sum()),
        )  # fmt: skip
        low = -math.inf if estimate.ci_low is None else estimate.ci_low
        high = math.inf if estimate.ci_high is None else estimate.ci_high
        covered += int(low <= truth <= high)
        level = estimate.level or 0.0
    assert covered / CENSORED_SIMULATIONS >= level - TOLERANCE / 2


# --- one arm's geometric mean (a capacity at the reference speed) ------------------------------------------------


def _log_mean_covered(logs: FloatArray, truth: float) -> npt.NDArray[np.bool_]:
    """Whether the t interval on each row's log values covers ``truth``: :func:`log_mean_interval` row by row,
    vectorised (the first rows are checked against the function itself)."""
    n = logs.shape[1]
    centre = logs.mean(axis=1)
    half = scipy_stats.t.ppf(0.975, n - 1) * logs.std(axis=1, ddof=1) / math.sqrt(n)
    for row, low, high in zip(logs[:20], centre[:20] - half[:20], centre[:20] + half[:20], strict=True):
        estimate = log_mean_interval(np.exp(row))
        assert estimate.ci_low is not None and estimate.ci_high is not None
        assert (math.log(estimate.ci_low), math.log(estimate.ci_high)) == pytest.approx((low, high), abs=1e-9)
    return np.asarray((centre - half <= truth) & (truth <= centre + half))


def _geometric_coverage(n: int, slow_share: float, jitter: float) -> float:
    rng = np.random.default_rng(SEED + n + int(slow_share * 100) + int(jitter * 1000))
    logs = math.log(700.0) + _runs(rng, (SIMULATIONS, n), slow_share, jitter)
    return float(_log_mean_covered(logs, math.log(700.0) + slow_share * SLOW_STATE).mean())


@pytest.mark.parametrize("n", (*REPETITIONS[:3], 9))
@pytest.mark.parametrize(("slow_share", "jitter"), [(0.0, 0.05), (0.0, RUN_SD), (0.05, 0.14), (0.2, 0.14), (0.5, 0.14)])
def test_the_geometric_mean_interval_covers_within_two_points_on_near_normal_noise(
    n: int, slow_share: float, jitter: float
) -> None:
    """Lognormal noise, and two-level mixes whose jitter (0.14) is comparable to the gap between the levels (0.35):
    the spread a capacity at the reference speed has left (residual sd about 0.16, skew -0.3 over 315 curves)."""
    coverage = _geometric_coverage(n, slow_share, jitter)
    assert abs(coverage - NOMINAL) <= TOLERANCE, coverage


@pytest.mark.parametrize("n", (*REPETITIONS[:3], 9))
@pytest.mark.parametrize("slow_share", [0.05, 0.1, 0.2, 0.3])
def test_the_geometric_mean_interval_keeps_three_quarters_when_rare_repetitions_stand_far_out(
    n: int, slow_share: float
) -> None:
    """What the figure cannot show: one arm's noise, unlike a paired difference, need not be symmetric. With a tight
    cluster (jitter 0.05) and a few repetitions 29 % slower (skew -0.8 to -2.4) the t interval covers only 78-94 %
    (docs/report.md gives the table); the worst seen is checked here, so a worse interval (e.g. normal quantiles
    instead of t) fails."""
    assert _geometric_coverage(n, slow_share, 0.05) >= 0.75
