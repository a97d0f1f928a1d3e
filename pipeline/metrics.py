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
