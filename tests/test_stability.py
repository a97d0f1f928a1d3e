"""Prediction stability on the probe (pipeline.core.stability), against values worked out by hand."""

import numpy as np
import pytest

from pipeline.core import stability


def test_churn_is_the_mean_absolute_change_between_consecutive_days_per_slice():
    masks = stability.probe_slices(tail=[True, False, False, True], new=[False, False, True, False])
    days = [np.array([0.10, 0.20, 0.30, 0.40]), np.array([0.20, 0.20, 0.10, 0.40]), np.array([0.20, 0.50, 0.10, 0.10])]
    churn = stability.churn(days, masks)
    # day 1 -> 2: |.1|, 0, |.2|, 0 ; day 2 -> 3: 0, |.3|, 0, |.3|
    assert churn["overall"] == pytest.approx(np.mean([0.3 / 4, 0.6 / 4]))
    assert churn["tail"] == pytest.approx(np.mean([0.1 / 2, 0.3 / 2]))
    assert churn["new"] == pytest.approx(np.mean([0.2, 0.0]))
    assert (churn["overall_rows"], churn["tail_rows"], churn["new_rows"]) == (4, 2, 1)


def test_seed_variance_pairs_the_same_days_and_an_empty_slice_says_none():
    masks = stability.probe_slices(tail=[False, False], new=[True, False])
    a, b = [np.array([0.1, 0.2]), np.array([0.3, 0.3])], [np.array([0.2, 0.2]), np.array([0.3, 0.1])]
    variance = stability.seed_variance(a, b, masks)
    assert variance["overall"] == pytest.approx(np.mean([0.05, 0.1]))
    assert variance["new"] == pytest.approx(0.05)
    assert variance["tail"] is None and variance["tail_rows"] == 0
    with pytest.raises(ValueError, match="not the same days"):
        stability.seed_variance(a, b[:1], masks)
    with pytest.raises(ValueError, match="not one probe"):
        stability.churn([np.zeros(2), np.zeros(3)], masks)
