"""The two-arm paired test: paired t on per-unit log ratios, Bonferroni levels, units and blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from servingbench.gate.figures import MIN_UNITS
from servingbench.gate.paired import (
    MAX_SUGGESTED_UNITS,
    block_unit,
    family_level,
    paired_test,
    unit_log_ratios,
    units_for_margin,
)

LOGS = [0.10, 0.05, 0.12, 0.08, 0.02, 0.11, 0.07]


def test_interval_and_p_value_agree_with_scipy_one_sample_t() -> None:
    test = paired_test(LOGS, level=0.95)
    reference = scipy_stats.ttest_1samp(LOGS, 0.0)
    interval = reference.confidence_interval(0.95)
    assert test.n == len(LOGS)
    assert test.mean == pytest.approx(float(np.mean(LOGS)))
    assert test.low == pytest.approx(interval.low)
    assert test.high == pytest.approx(interval.high)
    assert test.p_value == pytest.approx(reference.pvalue)
    assert test.above_zero and not test.below_zero


def test_a_stricter_level_widens_the_interval() -> None:
    loose, strict = paired_test(LOGS, level=0.95), paired_test(LOGS, level=family_level(4))
    assert strict.low is not None and loose.low is not None and strict.high is not None and loose.high is not None
    assert strict.low < loose.low and strict.high > loose.high


def test_below_the_minimum_there_is_a_range_and_no_interval() -> None:
    test = paired_test(LOGS[: MIN_UNITS - 1], level=0.95)
    assert not test.has_interval and test.p_value is None
    assert (test.range_low, test.range_high) == (min(LOGS[:4]), max(LOGS[:4]))
    assert paired_test([], level=0.95).n == 0


def test_zero_spread_gives_a_zero_width_interval() -> None:
    same = paired_test([0.05] * 6, level=0.95)
    assert same.low == same.high == pytest.approx(0.05) and same.p_value == 0.0
    none = paired_test([0.0] * 6, level=0.95)
    assert none.p_value == 1.0 and not none.above_zero and not none.below_zero


def test_family_level_is_bonferroni() -> None:
    assert family_level(1) == pytest.approx(0.95)
    assert family_level(4) == pytest.approx(0.9875)
    with pytest.raises(ValueError, match="confidence"):
        family_level(4, confidence=1.0)


def test_log_ratios_pair_by_repetition_and_drop_missing_or_nonpositive_values() -> None:
    head = {0: 2.0, 1: 3.0, 2: 4.0, 3: 0.0}
    base = {0: 1.0, 1: 3.0, 3: 1.0, 4: 1.0}
    assert unit_log_ratios(head, base) == pytest.approx([math.log(2.0), 0.0])


def test_blocks_average_their_repetitions_into_one_unit() -> None:
    head = {rep: 2.0 if rep < 3 else 1.0 for rep in range(6)}
    base = dict.fromkeys(range(6), 1.0)
    assert unit_log_ratios(head, base, block_unit(3)) == pytest.approx([math.log(2.0), 0.0])
    with pytest.raises(ValueError, match="at least 1"):
        block_unit(0)


def _half_width(n: int, sd: float = 0.2) -> float:
    return float(scipy_stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def test_units_for_margin_is_the_first_size_whose_interval_fits() -> None:
    units = units_for_margin(0.2, 5, 0.95, 0.05)
    assert units is not None
    assert _half_width(units) <= 0.05 < _half_width(units - 1)
    assert units_for_margin(5.0, 5, 0.95, 0.001) is None  # beyond MAX_SUGGESTED_UNITS
    assert units_for_margin(0.2, 5, 0.95, 0.0) is None
    assert MAX_SUGGESTED_UNITS >= 100
