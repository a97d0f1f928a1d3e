"""Prediction stability (finding F8): how much a ranker's predicted CTR moves when nothing about the request moved.

A run scores one fixed set of logged requests, the probe (the first PROBE_ROWS impressions of the last
logged day, which no model of the run has trained on when it scores them), with the model of each
evaluation day (trained through the day before). Two measures, in predicted-CTR units, overall and on
the probe's tail items (the training window's least impressed third) and new items (first seen on the
probe's day, so unseen by every model that scores them):
- churn: the mean |p_d - p_(d-1)| between the models of consecutive days of one run (a retrain's churn);
- seed variance: the mean |p_a - p_b| between two runs of one arm with other model seeds, on the same days.
"""

import numpy as np

PROBE_ROWS = 20_000
SLICES = ("overall", "tail", "new")


def probe_slices(tail: np.ndarray, new: np.ndarray) -> dict[str, np.ndarray]:
    """The probe's rows of each slice (SLICES) as boolean masks."""
    tail, new = np.asarray(tail, bool), np.asarray(new, bool)
    return {"overall": np.ones_like(tail), "tail": tail, "new": new}


def _mean_abs(a: list[np.ndarray], b: list[np.ndarray], masks: dict[str, np.ndarray]) -> dict:
    """Per slice: the mean over pairs (a[i], b[i]) of the mean |a[i] - b[i]| on the slice's rows (None when empty
    or without pairs), and the slice's rows."""
    out = {}
    for name, mask in masks.items():
        pairs = [np.abs(x[mask] - y[mask]).mean() for x, y in zip(a, b)] if mask.any() else []
        out[name] = float(np.mean(pairs)) if pairs else None
        out[f"{name}_rows"] = int(mask.sum())
    return out


def churn(predictions: list[np.ndarray], masks: dict[str, np.ndarray]) -> dict:
    """Mean |p_d - p_(d-1)| over consecutive days' predictions of the probe, per slice.

    Raises:
      ValueError: the days scored different numbers of rows (not one probe).
    """
    _check_one_probe(predictions)
    return _mean_abs(predictions[1:], predictions[:-1], masks)


def seed_variance(a: list[np.ndarray], b: list[np.ndarray], masks: dict[str, np.ndarray]) -> dict:
    """Mean |p_a - p_b| between two runs' predictions of the probe on the same days, per slice."""
    if len(a) != len(b):
        raise ValueError(f"the two runs scored the probe on {len(a)} and {len(b)} days: not the same days")
    _check_one_probe(a + b)
    return _mean_abs(a, b, masks)


def _check_one_probe(predictions: list[np.ndarray]) -> None:
    sizes = {len(p) for p in predictions}
    if len(sizes) > 1:
        raise ValueError(f"probe predictions of different sizes {sorted(sizes)}: not one probe")
