"""Evaluation metrics computed exactly in numpy (the reference the in-graph metrics are checked against)."""

import numpy as np


def binary_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U) with ties counted as one half.

    Args:
      labels: 0/1 array.
      scores: array of the same length; higher means more likely positive.

    Returns:
      The AUC, or NaN when the labels hold only one class (AUC is undefined there).

    Raises:
      ValueError: if the shapes differ, a label is not 0/1 or a score is not finite (NaN would
        otherwise rank as the highest score and a diverged model would report a perfect AUC).
    """
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} of {scores.size} scores are not finite "
                         "(NaN or inf): the model diverged or its input is broken")
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    # Average ranks of tied scores, so ties count one half.
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first_rank = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mean_rank = first_rank + (counts + 1) / 2.0
    rank_sum = mean_rank[inverse][labels == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


class WeightedAUC:
    """Exact ROC AUC of fixed scores under changing per-example weights (bootstrap replicates).

    The scores are sorted once; each call sums, per group of tied scores, the weights of its positives
    times the weight of the negatives ranked below (ties count one half). With all weights 1 it equals
    binary_auc; with integer weights, binary_auc of the examples repeated that many times.
    """

    def __init__(self, labels: np.ndarray, scores: np.ndarray):
        labels = np.asarray(labels).ravel()
        binary_auc(labels, scores)  # the same checks on labels and scores
        _, self._group = np.unique(np.asarray(scores, dtype=np.float64).ravel(), return_inverse=True)
        self._positive = labels == 1
        self._groups = int(self._group.max()) + 1 if self._group.size else 0

    def __call__(self, weights: np.ndarray) -> float:
        """The AUC under `weights` (one non-negative weight per example); NaN when a class has no weight."""
        weights = np.asarray(weights, dtype=np.float64).ravel()
        positives = np.bincount(self._group, weights * self._positive, minlength=self._groups)
        negatives = np.bincount(self._group, weights * ~self._positive, minlength=self._groups)
        total_positive, total_negative = positives.sum(), negatives.sum()
        if total_positive == 0 or total_negative == 0:
            return float("nan")
        below = np.cumsum(negatives) - negatives
        return float((positives * (below + 0.5 * negatives)).sum() / (total_positive * total_negative))


def rmse(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Root mean squared error.

    Raises:
      ValueError: if the shapes differ, the arrays are empty, or a value is not finite.
    """
    targets = np.asarray(targets, dtype=np.float64).ravel()
    predictions = np.asarray(predictions, dtype=np.float64).ravel()
    if targets.shape != predictions.shape or not targets.size:
        raise ValueError(f"targets {targets.shape} and predictions {predictions.shape}: need equal, non-empty shapes")
    for name, values in (("targets", targets), ("predictions", predictions)):
        if not np.isfinite(values).all():
            raise ValueError(f"{int((~np.isfinite(values)).sum())} of {values.size} {name} are not finite (NaN or inf)")
    return float(np.sqrt(np.mean((targets - predictions) ** 2)))


# Probabilities are clipped this far from 0 and 1 before their logarithm (a saturated score costs ~16 nats).
LOG_LOSS_EPSILON = 1e-7


def _labels_and_probabilities(labels, probabilities) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    if labels.shape != probabilities.shape:
        raise ValueError(f"labels {labels.shape} and probabilities {probabilities.shape} differ in shape")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(probabilities).all() or (probabilities < 0).any() or (probabilities > 1).any():
        raise ValueError("probabilities must be finite and in [0, 1]")
    return labels, probabilities


def row_log_losses(labels, probabilities) -> np.ndarray:
    """Each row's binary cross-entropy in nats."""
    labels, p = _labels_and_probabilities(labels, probabilities)
    p = np.clip(p, LOG_LOSS_EPSILON, 1.0 - LOG_LOSS_EPSILON)
    return -(labels * np.log(p) + (1.0 - labels) * np.log1p(-p))


def log_loss(labels, probabilities) -> float:
    """Mean binary cross-entropy in nats (NaN on no rows)."""
    losses = row_log_losses(labels, probabilities)
    return float(losses.mean()) if losses.size else float("nan")


def rate_entropy(rate: float) -> float:
    """The entropy of a click rate in nats (NaN outside (0, 1))."""
    if not 0.0 < rate < 1.0:
        return float("nan")
    return float(-(rate * np.log(rate) + (1.0 - rate) * np.log1p(-rate)))


def base_rate_entropy(labels) -> float:
    """The log loss of always predicting the rows' own click rate: the entropy of that rate (NaN when the rows
    hold one class only, or none)."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    return rate_entropy(labels.mean() if labels.size else float("nan"))


def normalized_entropy(labels, probabilities) -> float:
    """Normalized entropy (NE): the log loss over the entropy of the rows' click rate. 1 is no better than
    predicting the base rate for everyone; lower is better. NaN when the rows hold one class only."""
    return log_loss(labels, probabilities) / base_rate_entropy(labels)


def calibration(labels, probabilities) -> float:
    """Mean predicted click probability over the observed click rate: 1 is calibrated, 2 predicts twice as
    many clicks as happened. NaN without clicks."""
    labels, p = _labels_and_probabilities(labels, probabilities)
    clicks = labels.sum()
    return float(p.sum() / clicks) if clicks else float("nan")
