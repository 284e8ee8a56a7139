"""Statistics over repetitions and latency histograms: pure, deterministic.

The unit is the repetition: every repetition measures every arm (a server config, a model, an environment), so
arms are compared as pairs within a repetition. :func:`compare_arms` takes ``{arm: {repetition: value}}`` and
compares every arm with a reference arm (named, or the best one chosen from the data) by the per-repetition log
ratio arm / reference:

- the ratio is the geometric mean of the per-repetition ratios, exp(mean log ratio);
- its interval is a paired t interval on the log ratios, Bonferroni-corrected over the comparisons the verdict
  could make: k - 1 against a named reference, all k (k - 1) / 2 pairs when the reference is the best arm chosen
  from the same data (the best is a function of the data, so only a family that covers every pair covers the
  comparisons with whichever arm turns out best);
- **better / worse** when the corrected interval excludes 1; **equivalent** within +/-M when it lies inside
  [1 / (1 + M), 1 + M] (two one-sided tests, each at the corrected level); **inconclusive** otherwise, with the
  repetitions likely to settle it; **too-few** below :data:`MIN_REPETITIONS_FOR_INTERVAL` pairs, where only the
  range of the per-repetition ratios is given.

Why t on log ratios: pairing removes the drift the arms share; what remains is the difference of two runs' noise,
which is symmetric whatever its shape (the difference of two independent draws of one distribution), and t is
close to exact for symmetric data even with two-level (bimodal) machine-speed noise (the tests check coverage).
Exact sign-flip or signed-rank methods cannot reach 95 % with 5 or 6 pairs (their smallest p-value is 2 / 2^n).

One arm's central value is its median with a distribution-free interval between two order statistics
(:func:`median_interval`): its coverage is known exactly for any continuous distribution (bimodal noise
included) and it copes with left-censored values ("below the lowest rate tried"). With 5 values the widest such
interval, min to max, covers 93.75 %, so it is labelled with the level it really has.

Where no value is censored and a figure's noise is multiplicative, :func:`log_mean_interval` gives a more
efficient central value: the geometric mean (the mean of the log values, back-transformed) with the t interval on
the log values. On normal log values the median uses 2/pi (64 %) of the information a mean does. The t interval is
exact for normal log values, and within 2 points of 95 % for two-level noise whose jitter is comparable to the gap
between the levels (what a capacity at the reference speed has left); it covers less (78 to 94 %) where a few
repetitions stand far out of a tight cluster (skew -0.8 to -2.4), which the median's interval would not (the tests
check both). A 20 % trimmed mean was tried for robustness and rejected: its Tukey-McLaughlin interval covers 74 %
at 5 values and 89 % at 10 on an even two-level split. And one wild repetition moves a mean more than a median.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram
from scipy import special
from scipy import stats as scipy_stats

from servingbench.units import US_PER_MS

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "CONFIDENCE",
    "DEFAULT_EQUIVALENCE_MARGIN",
    "DEFAULT_SEED",
    "GEOMETRIC_MEAN",
    "HDR_HIGHEST_US",
    "HDR_LOWEST_US",
    "HDR_SIGNIFICANT_DIGITS",
    "MAX_SUGGESTED_REPETITIONS",
    "MEDIAN",
    "MIN_REPETITIONS_FOR_INTERVAL",
    "PERCENTILES",
    "SETTLING_POWER",
    "SPECTRUM_MAX_NINES",
    "UNSTABLE_CV",
    "ArmsVerdict",
    "Direction",
    "Estimate",
    "Family",
    "Outcome",
    "PairedComparison",
    "PairedDifference",
    "RatioEstimate",
    "ReferenceKind",
    "UnpairedRatio",
    "best_arm",
    "coefficient_of_variation",
    "compare_arms",
    "compare_difference",
    "compare_pair",
    "decode_histogram",
    "direction_of",
    "log_mean_interval",
    "log_ratio_interval",
    "median_interval",
    "merge_histograms",
    "new_histogram",
    "nines",
    "order_statistic_ranks",
    "paired_differences",
    "paired_log_ratios",
    "percentile_ms",
    "percentile_spectrum",
    "ratio_of_medians_ci",
    "repetitions_to_settle",
    "unpaired_ratio",
]

PERCENTILES = (50, 90, 99, 99.9)
CONFIDENCE = 0.95
MEDIAN = "median"
GEOMETRIC_MEAN = "geometric mean"
MIN_REPETITIONS_FOR_INTERVAL = 5  # below this: no interval and no verdict word, only the range
DEFAULT_EQUIVALENCE_MARGIN = 0.05  # +/-5 %: "equivalent" when the whole interval lies within it
SETTLING_POWER = 0.8  # "likely to settle": the repetition count that settles it with this probability
MAX_SUGGESTED_REPETITIONS = 1000  # beyond this, say the difference is out of reach on this machine
MIN_SAMPLES_FOR_SPREAD = 2
UNSTABLE_CV = 0.10
ZERO_SPREAD = 1e-12  # a log-scale standard deviation below this is rounding, not noise
BOOTSTRAP_RESAMPLES = 10_000
DEFAULT_SEED = 20_261_124
HDR_LOWEST_US = 1
HDR_HIGHEST_US = 60_000_000
HDR_SIGNIFICANT_DIGITS = 3
SPECTRUM_MAX_NINES = 4.0  # 99.99 %
SPECTRUM_POINTS = 160

Direction = Literal["better", "worse", "same"]
Outcome = Literal["better", "worse", "equivalent", "inconclusive", "too-few"]
ReferenceKind = Literal["named", "best", "shown"]
FloatArray = npt.NDArray[np.float64]


# --- one arm ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """The median of ``n`` repetitions with a distribution-free interval between two order statistics.

    ``level`` is the interval's exact coverage (e.g. 0.9375 for min..max of 5; at least :data:`CONFIDENCE` from 6
    values); ``None``, with no interval, below :data:`MIN_REPETITIONS_FOR_INTERVAL`. ``censored`` counts the values
    only known to lie beyond a bound, ``censored_above`` of them above one (e.g. a capacity "at least the highest rate
    measured"), the rest below one ("below the lowest rate measured"). ``ci_low`` is ``None`` (``open_below``) when
    the lower order statistic may be a value censored below, ``ci_high`` ``None`` (``open_above``) when the upper one
    may be a value censored above. ``median_is_bound``: the median is only known to be at most ``median``;
    ``median_at_least``: only known to be at least ``median``; ``median`` is NaN when censoring leaves it unknown.
    ``statistic`` names the central value ``median`` holds: :data:`MEDIAN`, or :data:`GEOMETRIC_MEAN` (from
    :func:`log_mean_interval`: never censored, its interval a t interval on the log values).
    """

    median: float
    ci_low: float | None
    ci_high: float | None
    n: int
    cv: float | None
    unstable: bool
    level: float | None = None
    censored: int = 0
    median_is_bound: bool = False
    rank: int | None = None
    censored_above: int = 0
    median_at_least: bool = False
    statistic: str = MEDIAN

    @property
    def has_interval(self) -> bool:
        """True when an interval was computed (at least :data:`MIN_REPETITIONS_FOR_INTERVAL` repetitions)."""
        return self.level is not None

    @property
    def open_below(self) -> bool:
        """True when the interval has no lower end because censored values may sit below it."""
        return self.has_interval and self.ci_low is None

    @property
    def open_above(self) -> bool:
        """True when the interval has no upper end because censored values may sit above it."""
        return self.has_interval and self.ci_high is None

    @property
    def censored_below(self) -> int:
        """How many values are only known to lie below a bound."""
        return self.censored - self.censored_above

    @property
    def median_known(self) -> bool:
        """False when censored values on both sides leave the median undetermined."""
        return math.isfinite(self.median)

    @property
    def label(self) -> str:
        """What the interval is, e.g. "93.8% interval of the median (order statistics 1 and 5 of 5)"."""
        if self.level is None:
            return f"no interval from {self.n} repetition{'' if self.n == 1 else 's'}"
        if self.statistic == GEOMETRIC_MEAN:
            return f"{_percent(self.level)} t interval of the geometric mean (on the log values of {self.n})"
        low = self.rank or 1
        high = self.n + 1 - low
        return f"{_percent(self.level)} interval of the median (order statistics {low} and {high} of {self.n})"


def _percent(level: float) -> str:
    """0.95 -> "95%", 0.9375 -> "93.8%"."""
    text = f"{level * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _as_array(samples: Iterable[float]) -> FloatArray:
    return np.asarray([float(value) for value in samples], dtype=np.float64)


def coefficient_of_variation(samples: Iterable[float]) -> float | None:
    """Sample standard deviation / mean; ``None`` below two samples or for a zero mean."""
    values = _as_array(samples)
    if values.size < MIN_SAMPLES_FOR_SPREAD:
        return None
    mean = float(np.mean(values))
    if mean == 0.0:
        return None
    return float(np.std(values, ddof=1)) / abs(mean)


def order_statistic_ranks(n: int, confidence: float = CONFIDENCE) -> tuple[int, float]:
    """The 1-based rank ``r`` whose order statistics x(r) .. x(n + 1 - r) bound the median, and their coverage.

    Coverage is P(r <= B <= n - r) for B ~ Binomial(n, 1/2), exact for any continuous distribution. ``r`` is the
    largest rank reaching ``confidence``; when none does (n <= 5 at 95 %), ``r`` = 1 with the coverage min..max has.
    """
    if n < 1:
        raise ValueError("order_statistic_ranks needs at least one value")
    ranks = np.arange(1, (n + 1) // 2 + 1)
    coverage = scipy_stats.binom.cdf(n - ranks, n, 0.5) - scipy_stats.binom.cdf(ranks - 1, n, 0.5)
    reaching = ranks[coverage >= confidence]
    rank = int(reaching[-1]) if reaching.size else 1
    return rank, float(coverage[rank - 1])


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _central(lower_median: float, upper_median: float) -> tuple[float, bool, bool]:
    """(the median to show, only an upper bound, only a lower bound) from the medians of the two bracketing sets."""
    if lower_median == upper_median:
        return upper_median, False, False
    if math.isfinite(upper_median):
        return upper_median, True, False
    if math.isfinite(lower_median):
        return lower_median, False, True
    return math.nan, False, False


def median_interval(
    values: Iterable[float],
    *,
    censored_below: Iterable[float] = (),
    censored_above: Iterable[float] = (),
    confidence: float = CONFIDENCE,
) -> Estimate:
    """Median of one arm's per-repetition values with an order-statistic interval (see :class:`Estimate`).

    ``censored_below`` holds, for each left-censored repetition, the bound its value is known to lie below (e.g. a
    capacity "below the lowest rate measured"); ``censored_above``, for each right-censored one, the bound its value
    is known to lie above (a capacity "at least the highest rate measured", a p99 past the SLO at a rate never
    reached). Upper ends treat a value censored below as its bound and one censored above as above everything; lower
    ends the other way round, so the interval covers at least its stated level. No interval below
    :data:`MIN_REPETITIONS_FOR_INTERVAL` values.
    """
    observed, below, above = np.sort(_as_array(values)), _as_array(censored_below), _as_array(censored_above)
    n = observed.size + below.size + above.size
    if n == 0:
        raise ValueError("median_interval needs at least one value")
    # Each order statistic is bracketed: the true one lies between its value in `lower` and in `upper`.
    upper = np.sort(np.concatenate([observed, below, np.full(above.size, math.inf)]))
    lower = np.sort(np.concatenate([np.full(below.size, -math.inf), observed, above]))
    median, at_most, at_least = _central(float(np.median(lower)), float(np.median(upper)))
    cv = coefficient_of_variation(observed)
    estimate = Estimate(
        median,
        None,
        None,
        n,
        cv,
        cv is not None and cv > UNSTABLE_CV,
        censored=int(below.size + above.size),
        median_is_bound=at_most,
        censored_above=int(above.size),
        median_at_least=at_least,
    )
    if n < MIN_REPETITIONS_FOR_INTERVAL:
        return estimate
    rank, level = order_statistic_ranks(n, confidence)
    return replace(
        estimate,
        ci_low=_finite_or_none(float(lower[rank - 1])),
        ci_high=_finite_or_none(float(upper[n - rank])),
        level=level,
        rank=rank,
    )


def log_mean_interval(
    values: Iterable[float], *, confidence: float = CONFIDENCE, extra_log_se: float = 0.0
) -> Estimate:
    """The geometric mean of positive values (exp of the mean log) with the t interval on the log values, for values
    that are all measured (with censored ones use :func:`median_interval`). No interval below
    :data:`MIN_REPETITIONS_FOR_INTERVAL` values; a zero spread (and no ``extra_log_se``) gives a zero-width interval.

    ``extra_log_se``: the standard error (log scale) of something every value shares and the spread between them
    cannot show, e.g. a fitted correction applied to all of them; it is added to the mean's standard error in
    quadrature, with the same t quantile."""
    observed = _as_array(values)
    if observed.size == 0:
        raise ValueError("log_mean_interval needs at least one value")
    if not np.all(np.isfinite(observed)) or np.any(observed <= 0.0):
        raise ValueError("log_mean_interval needs finite positive values")
    logs = np.log(observed)
    centre = float(np.mean(logs))
    cv = coefficient_of_variation(observed)
    estimate = Estimate(
        math.exp(centre), None, None, int(observed.size), cv, cv is not None and cv > UNSTABLE_CV,
        statistic=GEOMETRIC_MEAN,
    )  # fmt: skip
    if not math.isfinite(extra_log_se) or extra_log_se < 0.0:
        raise ValueError("log_mean_interval needs a finite, non-negative extra_log_se")
    if observed.size < MIN_REPETITIONS_FOR_INTERVAL:
        return estimate
    spread = float(np.std(logs, ddof=1))
    if spread <= ZERO_SPREAD:
        spread = 0.0
        if extra_log_se == 0.0:
            return replace(estimate, ci_low=estimate.median, ci_high=estimate.median, level=confidence)
    error = math.sqrt(spread * spread / observed.size + extra_log_se * extra_log_se)
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, observed.size - 1)) * error
    return replace(estimate, ci_low=math.exp(centre - half), ci_high=math.exp(centre + half), level=confidence)


# --- paired comparisons ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """The comparisons one verdict could make, sharing ``confidence`` (Bonferroni): ``size`` of them.

    ``reference`` is "named" (``size`` = k - 1 comparisons with a reference the plan names), "best" (``size`` =
    k (k - 1) / 2 pairs, because the reference was chosen from the same data) or "shown" (``size`` = the pairs a
    table shows, each pair fixed in advance, e.g. a framework against its floor).
    """

    confidence: float
    size: int
    reference: ReferenceKind

    @property
    def level(self) -> float:
        """The coverage of each interval of the family, e.g. 0.995 for 95 % over 10 pairs."""
        return 1.0 - (1.0 - self.confidence) / max(self.size, 1)

    @property
    def label(self) -> str:
        """What the intervals are, e.g. "95% simultaneous, Bonferroni over 10 pairs"."""
        if self.size <= 1:
            return f"{_percent(self.confidence)} paired t interval"
        what = {"best": "pairs", "named": "comparisons with the reference", "shown": "pairs shown"}[self.reference]
        return f"{_percent(self.confidence)} simultaneous, Bonferroni over {self.size} {what}"


@dataclass(frozen=True)
class PairedComparison:
    """One arm against the reference over ``pairs`` repetitions where both were measured.

    ``ratio`` = exp(mean of log(arm / reference)), the geometric mean of the per-repetition ratios; ``low``/``high``
    its interval (``None`` below :data:`MIN_REPETITIONS_FOR_INTERVAL` pairs, where ``range_low``/``range_high`` are
    the smallest and largest per-repetition ratio). ``outcome`` is "better" or "worse" (for the arm, given which way
    is better), "equivalent" (within +/-``margin``), "inconclusive" or "too-few". ``more_repetitions``: for an
    inconclusive outcome, the further repetitions likely to settle it (``None`` when more than
    :data:`MAX_SUGGESTED_REPETITIONS`). ``log_sd`` is the standard deviation of the log ratios.
    """

    arm: str
    reference: str
    pairs: int
    ratio: float | None
    low: float | None
    high: float | None
    range_low: float | None
    range_high: float | None
    outcome: Outcome
    more_repetitions: int | None
    family: Family
    margin: float
    log_sd: float | None = None

    @property
    def has_interval(self) -> bool:
        """True when the comparison rests on enough pairs for an interval."""
        return self.low is not None and self.high is not None

    @property
    def interval_label(self) -> str:
        """What the numbers are: the family label, or "range of N repetitions" below the minimum."""
        if self.has_interval:
            return self.family.label
        return f"range of {self.pairs} repetition{'' if self.pairs == 1 else 's'}"

    @property
    def within_margin(self) -> bool:
        """True when the whole interval lies inside [1 / (1 + margin), 1 + margin]."""
        if self.low is None or self.high is None:
            return False
        limit = math.log1p(self.margin)
        return -limit <= math.log(self.low) and math.log(self.high) <= limit


@dataclass(frozen=True)
class ArmsVerdict:
    """Every arm with data against ``reference`` (``None`` when no arm has data), in the order given."""

    reference: str | None
    family: Family
    comparisons: tuple[PairedComparison, ...]
    higher_is_better: bool
    margin: float

    def of(self, arm: str) -> PairedComparison | None:
        """The comparison of ``arm`` with the reference; ``None`` for the reference itself or an unknown arm."""
        return next((item for item in self.comparisons if item.arm == arm), None)


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0.0


def paired_log_ratios(arm: Mapping[int, float], reference: Mapping[int, float]) -> FloatArray:
    """log(arm / reference) per repetition where both have a positive finite value, in repetition order."""
    shared = sorted(rep for rep in arm.keys() & reference.keys() if _positive(arm[rep]) and _positive(reference[rep]))
    return np.asarray([math.log(arm[rep] / reference[rep]) for rep in shared], dtype=np.float64)


def log_ratio_interval(logs: FloatArray, level: float) -> tuple[FloatArray, FloatArray]:
    """Paired t interval on log ratios along the last axis, at two-sided ``level`` (vectorised for simulations).

    mean +/- t(1 - (1 - level) / 2, n - 1) * s / sqrt(n); a zero spread gives a zero-width interval.
    """
    n = logs.shape[-1]
    mean = np.mean(logs, axis=-1)
    half = scipy_stats.t.ppf(1.0 - (1.0 - level) / 2.0, n - 1) * np.std(logs, axis=-1, ddof=1) / math.sqrt(n)
    return mean - half, mean + half


def repetitions_to_settle(mean: float, sd: float, pairs: int, level: float, margin: float) -> int | None:
    """Further pairs after which the interval likely (:data:`SETTLING_POWER`) excludes 0 or fits in the margin.

    Plug-in estimate from the observed log-ratio ``mean`` and ``sd``: the smallest n whose
    (t(level) + t(power)) * sd / sqrt(n) is below the larger of |mean| (to show a difference) and
    log(1 + margin) - |mean| (to show equivalence). ``None`` beyond :data:`MAX_SUGGESTED_REPETITIONS` in all.
    """
    target = max(abs(mean), math.log1p(margin) - abs(mean))

    def settles(n: int) -> bool:  # the half-width shrinks as n grows, so bisection finds the first n that settles
        quantiles = float(special.stdtrit(n - 1, 1.0 - (1.0 - level) / 2.0) + special.stdtrit(n - 1, SETTLING_POWER))
        return quantiles * sd / math.sqrt(n) < target

    sizes = range(max(pairs, MIN_REPETITIONS_FOR_INTERVAL) + 1, MAX_SUGGESTED_REPETITIONS + 1)
    first = bisect.bisect_left(sizes, True, key=settles)
    return sizes[first] - pairs if first < len(sizes) else None


def _outcome(low: float, high: float, margin: float, higher_is_better: bool) -> Outcome:
    """The verdict from a log-scale interval."""
    if low > 0.0 or high < 0.0:
        return "better" if (low > 0.0) == higher_is_better else "worse"
    limit = math.log1p(margin)
    return "equivalent" if -limit <= low and high <= limit else "inconclusive"


def compare_pair(
    arm: str,
    reference: str,
    logs: FloatArray,
    *,
    family: Family,
    higher_is_better: bool,
    margin: float = DEFAULT_EQUIVALENCE_MARGIN,
) -> PairedComparison:
    """The comparison of one arm with the reference from its per-repetition log ratios (see :func:`compare_arms`)."""
    pairs = int(logs.size)
    base = PairedComparison(arm, reference, pairs, None, None, None, None, None, "too-few", None, family, margin)
    if pairs == 0:
        return base
    mean = float(np.mean(logs))
    sd = float(np.std(logs, ddof=1)) if pairs >= MIN_SAMPLES_FOR_SPREAD else None
    span = (math.exp(float(np.min(logs))), math.exp(float(np.max(logs))))
    if pairs < MIN_REPETITIONS_FOR_INTERVAL or sd is None:
        return PairedComparison(
            arm, reference, pairs, math.exp(mean), None, None, *span, "too-few", None, family, margin, sd
        )
    if sd < ZERO_SPREAD:
        sd, low, high = 0.0, mean, mean
    else:
        lows, highs = log_ratio_interval(logs, family.level)
        low, high = float(lows), float(highs)
    outcome = _outcome(low, high, margin, higher_is_better)
    more = repetitions_to_settle(mean, sd, pairs, family.level, margin) if outcome == "inconclusive" else None
    return PairedComparison(
        arm, reference, pairs, math.exp(mean), math.exp(low), math.exp(high), *span, outcome, more, family, margin, sd
    )


def best_arm(values: Mapping[str, Mapping[int, float]], *, higher_is_better: bool) -> str | None:
    """The arm with the best geometric mean, among arms with at least the minimum repetitions if any has them.

    Ties go to the arm given first. ``None`` when no arm has a positive value.
    """
    means = {
        arm: float(np.mean(np.log(positive)))
        for arm, by_rep in values.items()
        if (positive := [value for value in by_rep.values() if _positive(value)])
    }
    if not means:
        return None
    counts = {arm: sum(_positive(value) for value in values[arm].values()) for arm in means}
    enough = [arm for arm in means if counts[arm] >= MIN_REPETITIONS_FOR_INTERVAL] or list(means)
    sign = -1.0 if higher_is_better else 1.0
    return min(enough, key=lambda arm: sign * means[arm])


def _check_knobs(margin: float, confidence: float) -> None:
    if not 0.0 < margin < 1.0:
        raise ValueError(f"equivalence margin must be between 0 and 1 (exclusive), got {margin!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence!r}")


def compare_arms(
    values: Mapping[str, Mapping[int, float]],
    *,
    reference: str | None = None,
    higher_is_better: bool,
    margin: float = DEFAULT_EQUIVALENCE_MARGIN,
    confidence: float = CONFIDENCE,
) -> ArmsVerdict:
    """Compare every arm with the reference, paired by repetition: ``values`` is ``{arm: {repetition: value}}``.

    ``reference``: an arm of ``values`` (then a family of k - 1 comparisons), or ``None`` for the best arm by
    geometric mean (a family of k (k - 1) / 2 pairs), where k counts the arms with at least one positive value.
    Values that are missing, zero, negative or not finite drop out of their pairs only (pairwise-complete).
    ``margin``: equivalence margin, 0 < M < 1 (0.05: +/-5 %). ``confidence``: the family's level (0.95).
    Raises ``ValueError`` for a reference that is not an arm or knobs out of range.
    """
    _check_knobs(margin, confidence)
    if reference is not None and reference not in values:
        raise ValueError(f"reference {reference!r} is not one of the arms: {', '.join(values)}")
    k = sum(1 for by_rep in values.values() if any(_positive(value) for value in by_rep.values()))
    kind: ReferenceKind = "named" if reference is not None else "best"
    family = Family(confidence, max(k - 1, 1) if kind == "named" else max(k * (k - 1) // 2, 1), kind)
    chosen = reference if reference is not None else best_arm(values, higher_is_better=higher_is_better)
    if chosen is None:
        return ArmsVerdict(None, family, (), higher_is_better, margin)
    comparisons = tuple(
        compare_pair(
            arm,
            chosen,
            paired_log_ratios(by_rep, values[chosen]),
            family=family,
            higher_is_better=higher_is_better,
            margin=margin,
        )
        for arm, by_rep in values.items()
        if arm != chosen and any(_positive(value) for value in by_rep.values())
    )
    return ArmsVerdict(chosen, family, comparisons, higher_is_better, margin)


@dataclass(frozen=True)
class PairedDifference:
    """``arm`` - ``reference`` over the ``pairs`` repetitions where both were measured, in the metric's own unit.

    ``mean`` is the mean per-repetition difference; ``low``/``high`` a paired t interval on the differences at the
    family's level (``None`` below :data:`MIN_REPETITIONS_FOR_INTERVAL` pairs, where ``range_low``/``range_high``
    are the smallest and largest difference). Differences are not ratios: use :func:`compare_arms` for those.
    """

    arm: str
    reference: str
    pairs: int
    mean: float | None
    low: float | None
    high: float | None
    range_low: float | None
    range_high: float | None
    family: Family

    @property
    def has_interval(self) -> bool:
        """True when the difference rests on enough pairs for an interval."""
        return self.low is not None and self.high is not None

    @property
    def excludes_zero(self) -> bool:
        """True when the interval exists and lies wholly above or below zero."""
        return self.low is not None and self.high is not None and (self.low > 0.0 or self.high < 0.0)


def paired_differences(arm: Mapping[int, float], reference: Mapping[int, float]) -> FloatArray:
    """arm - reference per repetition where both have a finite value, in repetition order."""
    shared = sorted(
        rep for rep in arm.keys() & reference.keys() if math.isfinite(arm[rep]) and math.isfinite(reference[rep])
    )
    return np.asarray([arm[rep] - reference[rep] for rep in shared], dtype=np.float64)


def compare_difference(arm: str, reference: str, differences: FloatArray, *, family: Family) -> PairedDifference:
    """The paired t interval of the mean difference (arm - reference) at ``family.level``; below the minimum pairs
    only the range. A zero spread gives a zero-width interval."""
    pairs = int(differences.size)
    if pairs == 0:
        return PairedDifference(arm, reference, 0, None, None, None, None, None, family)
    mean = float(np.mean(differences))
    span = (float(np.min(differences)), float(np.max(differences)))
    if pairs < MIN_REPETITIONS_FOR_INTERVAL:
        return PairedDifference(arm, reference, pairs, mean, None, None, *span, family)
    if float(np.std(differences)) < ZERO_SPREAD * max(1.0, abs(mean)):
        return PairedDifference(arm, reference, pairs, mean, mean, mean, *span, family)
    half = scipy_stats.t.ppf(1.0 - (1.0 - family.level) / 2.0, pairs - 1) * float(np.std(differences, ddof=1))
    half /= math.sqrt(pairs)
    return PairedDifference(arm, reference, pairs, mean, mean - half, mean + half, *span, family)


# --- two independent sets of repetitions (two bundles) ----------------------------------------------------------


@dataclass(frozen=True)
class UnpairedRatio:
    """current / baseline as the ratio of geometric means, with a Welch t interval on log values at ``level``.

    No interval (``low``/``high`` ``None``) below :data:`MIN_REPETITIONS_FOR_INTERVAL` values on either side.
    """

    ratio: float | None
    low: float | None
    high: float | None
    level: float

    @property
    def significant(self) -> bool:
        """True when the interval exists and excludes 1."""
        return self.low is not None and self.high is not None and (self.low > 1.0 or self.high < 1.0)


def unpaired_ratio(baseline: Iterable[float], current: Iterable[float], *, level: float = CONFIDENCE) -> UnpairedRatio:
    """Two sets of repetitions that share no pairing (e.g. two bundles): Welch t on log values (scipy)."""
    base = np.log(_as_array(value for value in baseline if _positive(value)))
    cur = np.log(_as_array(value for value in current if _positive(value)))
    if base.size == 0 or cur.size == 0:
        return UnpairedRatio(None, None, None, level)
    difference = float(np.mean(cur) - np.mean(base))
    if min(base.size, cur.size) < MIN_REPETITIONS_FOR_INTERVAL:
        return UnpairedRatio(math.exp(difference), None, None, level)
    flat_base, flat_cur = float(np.std(base)) < ZERO_SPREAD, float(np.std(cur)) < ZERO_SPREAD
    if flat_base and flat_cur:
        return UnpairedRatio(math.exp(difference), math.exp(difference), math.exp(difference), level)
    if flat_base or flat_cur:  # Welch's limit with one constant side: a one-sample t on the other side
        varying, constant, sign = (cur, base, 1.0) if flat_base else (base, cur, -1.0)
        result = scipy_stats.ttest_1samp(varying, float(np.mean(constant)))
        one: Any = result.confidence_interval(confidence_level=level)
        bounds = sorted(sign * (float(end) - float(np.mean(constant))) for end in (one.low, one.high))
    else:
        two: Any = scipy_stats.ttest_ind(cur, base, equal_var=False).confidence_interval(confidence_level=level)
        bounds = [float(two.low), float(two.high)]
    return UnpairedRatio(math.exp(difference), math.exp(bounds[0]), math.exp(bounds[1]), level)


# --- kept for the CI regression gate (reports/regression.py), which has its own issue --------------------------


@dataclass(frozen=True)
class RatioEstimate:
    """``ratio`` = median(current) / median(baseline), with its bootstrap interval over repetitions.

    ``significant`` is true only when the interval exists and excludes 1. Used by the CI gate only; the report
    and compare use :func:`compare_arms` and :func:`unpaired_ratio`.
    """

    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    n_baseline: int
    n_current: int
    significant: bool

    @property
    def has_interval(self) -> bool:
        """True when an interval could be computed (at least two repetitions on each side)."""
        return self.ci_low is not None and self.ci_high is not None


def _finite_interval(low: float, high: float) -> tuple[float | None, float | None]:
    if math.isfinite(low) and math.isfinite(high):
        return low, high
    return None, None


def _ratio_of_medians(baseline: FloatArray, current: FloatArray, axis: int = -1) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.median(current, axis=axis) / np.median(baseline, axis=axis)


def ratio_of_medians_ci(
    baseline: Iterable[float],
    current: Iterable[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> RatioEstimate:
    """median(current) / median(baseline) with an independent two-sample percentile-bootstrap interval.

    Fewer than two samples on either side gives no interval and never a significant result. Kept for the CI
    gate; its coverage is poor with few repetitions (3 values: about 75 %), which the gate's own issue addresses.
    """
    base, cur = _as_array(baseline), _as_array(current)
    if base.size == 0 or cur.size == 0:
        raise ValueError("ratio_of_medians_ci needs at least one sample on each side")
    base_median = float(np.median(base))
    if base_median <= 0.0:
        return RatioEstimate(None, None, None, int(base.size), int(cur.size), False)
    ratio = float(np.median(cur)) / base_median
    if min(base.size, cur.size) < MIN_SAMPLES_FOR_SPREAD:
        return RatioEstimate(ratio, None, None, int(base.size), int(cur.size), False)
    result = scipy_stats.bootstrap(
        (base, cur),
        _ratio_of_medians,
        n_resamples=resamples,
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = _finite_interval(float(result.confidence_interval.low), float(result.confidence_interval.high))
    significant = low is not None and high is not None and (high < 1.0 or low > 1.0)
    return RatioEstimate(ratio, low, high, int(base.size), int(cur.size), significant)


def direction_of(estimate: RatioEstimate | UnpairedRatio, *, higher_is_better: bool) -> Direction:
    """Whether current is ``better``, ``worse`` or the ``same`` as baseline (same = not significant)."""
    if not estimate.significant or estimate.ratio is None:
        return "same"
    increased = estimate.ratio > 1.0
    return "better" if increased == higher_is_better else "worse"


# --- latency histograms -----------------------------------------------------------------------------------------


def new_histogram() -> HdrHistogram:
    """An empty latency histogram in microseconds: 1 us .. 60 s, 3 significant digits."""
    return HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_SIGNIFICANT_DIGITS)


def decode_histogram(encoded: str) -> HdrHistogram:
    """Decode one HdrHistogram V2 compressed base64 string; raise ``ValueError`` if it is not one."""
    try:
        return HdrHistogram.decode(encoded)
    except Exception as exc:  # hdrh raises several unrelated types for corrupt input
        raise ValueError(f"not an HdrHistogram V2 base64 string: {exc}") from exc


def merge_histograms(encoded: Iterable[str]) -> HdrHistogram | None:
    """Sum the encoded histograms (e.g. over repetitions); ``None`` when there are none."""
    merged: HdrHistogram | None = None
    for text in encoded:
        if merged is None:
            merged = new_histogram()
        merged.add(decode_histogram(text))
    return merged


def percentile_ms(histogram: HdrHistogram, percentile: float) -> float:
    """The value at ``percentile`` (0..100) of a microsecond histogram, in milliseconds."""
    return float(histogram.get_value_at_percentile(percentile)) / US_PER_MS


def nines(percentile: float) -> float:
    """Position of a percentile on a "nines" axis: 0 % -> 0, 90 % -> 1, 99 % -> 2, 99.9 % -> 3."""
    return -math.log10(1.0 - percentile / 100.0)


def percentile_spectrum(
    histogram: HdrHistogram, *, max_nines: float = SPECTRUM_MAX_NINES, points: int = SPECTRUM_POINTS
) -> list[tuple[float, float]]:
    """``(nines, latency ms)`` pairs from 0 % up to ``max_nines``, capped where the sample count runs out."""
    count = int(histogram.get_total_count())
    if count == 0:
        return []
    reachable = min(max_nines, math.log10(count)) if count > 1 else 0.0
    positions: Sequence[float] = np.linspace(0.0, reachable, max(points, 2)).tolist()
    percentiles = [100.0 * (1.0 - 10.0**-x) for x in positions]
    values = histogram.get_percentile_to_value_dict(percentiles)  # one pass over the buckets
    return [(x, float(values[p]) / US_PER_MS) for x, p in zip(positions, percentiles, strict=True) if p in values]
