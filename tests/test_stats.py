"""Interval arithmetic by hand: t intervals over seeds and paired % changes."""

import math

import pytest

from pipeline.core import stats


def test_mean_interval_by_hand():
    # mean 2, sd 1, se 1/sqrt(3); t(2) = 4.303: 2 +- 2.4843, which holds 0.
    interval = stats.mean_interval([1.0, 2.0, 3.0])
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.low == pytest.approx(-0.48434, abs=1e-5) and interval.high == pytest.approx(4.48434, abs=1e-5)
    assert not interval.significant
    # mean 10, sd 1: 10 +- 2.4843 excludes 0.
    assert stats.mean_interval([9.0, 10.0, 11.0]).significant


def test_one_value_has_no_interval_and_is_never_significant():
    interval = stats.mean_interval([0.7])
    assert interval.mean == 0.7 and math.isnan(interval.low) and math.isnan(interval.high)
    assert not interval.significant


def test_paired_change_by_hand():
    # Per-seed changes +20% and +10%: mean 15, sd 7.0711, se 5, t(1) = 12.706 -> 15 +- 63.53.
    interval = stats.paired_change([0.60, 0.66], [0.50, 0.60])
    assert interval.mean == pytest.approx(15.0)
    assert interval.low == pytest.approx(15 - 63.53, abs=1e-2) and interval.high == pytest.approx(15 + 63.53, abs=1e-2)
    # Pairing matters: the same values unpaired would not give these changes.
    assert stats.paired_change([0.66, 0.60], [0.50, 0.60]).mean == pytest.approx(16.0)


def test_t_quantiles_and_bad_input():
    assert stats.t_975(1) == 12.706 and stats.t_975(11) == 2.228 and stats.t_975(1000) == 1.960
    with pytest.raises(ValueError, match="finite"):
        stats.mean_interval([0.5, float("nan")])
    with pytest.raises(ValueError, match="disagree"):
        stats.paired_change([0.5], [0.5, 0.6])
