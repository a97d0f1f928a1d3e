"""The exact AUC against hand-worked cases and a brute-force pair count."""

import numpy as np
import pytest

from pipeline.core.metrics import binary_auc, rmse


def test_hand_worked_cases():
    assert binary_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert binary_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    # Pairs (pos, neg): (0.3 vs 0.1) win, (0.3 vs 0.3) tie, (0.5 vs both) win: (1 + 0.5 + 2) / 4.
    assert binary_auc([0, 1, 0, 1], [0.1, 0.3, 0.3, 0.5]) == pytest.approx(0.875)
    assert np.isnan(binary_auc([1, 1], [0.2, 0.3]))


def test_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 20, 300).astype(float)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    brute = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert binary_auc(labels, scores) == pytest.approx(brute)


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="0 or 1"):
        binary_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="differ in shape"):
        binary_auc([0, 1], [0.1])


def test_non_finite_scores_are_refused_not_ranked_highest():
    # NaN would otherwise sort above every score: a diverged model would get AUC 1.0 here.
    with pytest.raises(ValueError, match="2 of 4 scores are not finite"):
        binary_auc([0, 0, 1, 1], [0.1, 0.2, np.nan, np.nan])
    with pytest.raises(ValueError, match="not finite"):
        binary_auc([0, 1], [np.inf, 0.2])


def test_rmse_by_hand_and_refuses_non_finite_values():
    assert rmse([0.0, 1.0], [0.5, 0.5]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="1 of 2 predictions are not finite"):
        rmse([0.0, 1.0], [np.nan, 0.5])
