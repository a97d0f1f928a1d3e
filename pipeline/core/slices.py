"""Evaluation slices of a day's rows: by the candidate's age, and by its popularity in the training window.

Age: first seen that day (the paper's CTR/1D rows), seen 1-7 days before, older. Popularity: the items
impressed in the training window split into equal thirds of its impressions (head, torso, tail, as the
lookups per item are bucketed, pipeline.sid.lookup_stats), and "unseen" for items it never impressed.
Every slice reports its impressions beside its metrics, so a thin slice reads as one.
"""

import numpy as np

from pipeline.core import metrics

AGE_BUCKETS = (("new", 0, 0), ("1-7 days", 1, 7), ("older", 8, None))
POPULARITY_BANDS = ("head", "torso", "tail", "unseen")


def popularity_buckets(impressions: np.ndarray) -> np.ndarray:
    """0 (head), 1 (torso) or 2 (tail) per item, by cumulative share of impressions."""
    impressions = np.asarray(impressions, dtype=np.float64)
    order = np.argsort(-impressions, kind="stable")
    before = (np.cumsum(impressions[order]) - impressions[order]) / impressions.sum()
    buckets = np.empty(len(impressions), np.int64)
    buckets[order] = np.minimum((before * 3).astype(np.int64), 2)
    return buckets


def age_masks(item_age: np.ndarray) -> dict[str, np.ndarray]:
    """{age bucket: rows in it}."""
    item_age = np.asarray(item_age)
    return {name: (item_age >= low) & (item_age <= (high if high is not None else np.iinfo(np.int64).max))
            for name, low, high in AGE_BUCKETS}


class PopularityBands:
    """Each item's band in the training window, by the fingerprint the transform graph gives its id."""

    def __init__(self, keys: np.ndarray, impressions: np.ndarray):
        keys, impressions = np.asarray(keys, np.int64), np.asarray(impressions, np.int64)
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._bands = popularity_buckets(impressions)[order] if len(keys) else np.zeros(0, np.int64)

    def bands(self, candidate_keys: np.ndarray) -> np.ndarray:
        """0 head, 1 torso, 2 tail, 3 unseen, per row."""
        candidate_keys = np.asarray(candidate_keys, np.int64)
        out = np.full(len(candidate_keys), len(POPULARITY_BANDS) - 1, np.int64)
        if len(self._keys):
            at = np.minimum(np.searchsorted(self._keys, candidate_keys), len(self._keys) - 1)
            found = self._keys[at] == candidate_keys
            out[found] = self._bands[at[found]]
        return out

    def masks(self, candidate_keys: np.ndarray) -> dict[str, np.ndarray]:
        """{band: rows in it}."""
        bands = self.bands(candidate_keys)
        return {name: bands == index for index, name in enumerate(POPULARITY_BANDS)}


def slice_metrics(clicks: np.ndarray, probabilities: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per slice: impressions, clicks, CTR AUC, NE and calibration (None where a slice cannot say: no rows,
    one class only)."""
    out = {}
    for name, rows in masks.items():
        y, p = clicks[rows], probabilities[rows]
        out[name] = {"impressions": int(rows.sum()), "clicks": int(y.sum()),
                     "ctr_auc": _or_none(metrics.binary_auc(y, p) if y.size else float("nan")),
                     "ne": _or_none(metrics.normalized_entropy(y, p) if y.size else float("nan")),
                     "calibration": _or_none(metrics.calibration(y, p))}
    return out


def _or_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def over_days(day_slices: list[dict]) -> dict:
    """Each slice's metrics over a run's evaluation days: impressions summed, the metrics averaged over the
    days where they are defined (None where none is)."""
    out = {}
    for family in day_slices[0] if day_slices else {}:
        out[family] = {}
        for name in day_slices[0][family]:
            cells = [day[family][name] for day in day_slices if name in day.get(family, {})]
            out[family][name] = {"impressions": int(sum(c["impressions"] for c in cells))}
            for key in ("ctr_auc", "ne", "calibration"):
                values = [c[key] for c in cells if c[key] is not None]
                out[family][name][key] = float(np.mean(values)) if values else None
    return out


def reliability(clicks: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> list[dict]:
    """Predicted against observed click rate by score decile (equal-count bins of the sorted predictions)."""
    order = np.argsort(probabilities, kind="stable")
    out = []
    for part in np.array_split(order, bins):
        if part.size:
            out.append({"predicted": float(np.mean(probabilities[part])), "observed": float(np.mean(clicks[part])),
                        "impressions": int(part.size)})
    return out
