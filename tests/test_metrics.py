"""The exact AUC against hand-worked cases and a brute-force pair count."""

import numpy as np
import pytest

from pipeline.core.metrics import WeightedAUC, binary_auc, calibration, log_loss, normalized_entropy, rmse


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


def test_weighted_auc_is_the_auc_of_the_examples_repeated_by_their_weights():
    labels = np.array([1, 0, 1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.2, 0.2, 0.7, 0.3, 0.9])  # ties across classes count one half
    auc = WeightedAUC(labels, scores)
    assert auc(np.ones(7)) == pytest.approx(binary_auc(labels, scores))
    weights = np.array([2, 0, 1, 3, 1, 1, 2])
    repeated = np.repeat(np.arange(7), weights)
    assert auc(weights) == pytest.approx(binary_auc(labels[repeated], scores[repeated]))
    assert np.isnan(auc(np.array([1, 0, 1, 0, 1, 0, 0])))  # no negative weighted in


def test_weighted_auc_refuses_what_binary_auc_refuses():
    with pytest.raises(ValueError, match="not finite"):
        WeightedAUC(np.array([1, 0]), np.array([np.nan, 0.1]))


def test_log_loss_ne_and_calibration_by_hand():
    labels, p = [1, 0, 0, 0], [0.5, 0.5, 0.25, 0.25]
    loss = -(np.log(0.5) + np.log(0.5) + 2 * np.log(0.75)) / 4
    assert log_loss(labels, p) == pytest.approx(loss)
    rate = 0.25
    assert normalized_entropy(labels, p) == pytest.approx(loss / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate)))
    assert normalized_entropy(labels, [rate] * 4) == pytest.approx(1.0)  # the base rate for everyone: NE 1
    assert calibration(labels, p) == pytest.approx(1.5)  # 1.5 clicks predicted, 1 clicked
    assert np.isnan(normalized_entropy([0, 0], [0.1, 0.2])) and np.isnan(calibration([0, 0], [0.1, 0.2]))
    assert log_loss([1], [0.0]) == pytest.approx(-np.log(1e-7))  # clipped, not infinite
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        log_loss([1], [1.5])
