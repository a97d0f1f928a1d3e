"""The item features a representation needs, joined onto (watch, candidate, history) rows.

One function for both paths, so training and serving cannot drift apart: the transform job joins
logged impressions with it, and serving clients build their requests with it. Items without a SID
get codes of -1 (the table's OOV row); items without an embedding get zeros; both are counted.
"""

import dataclasses

import numpy as np

from pipeline.core import features as fk
from pipeline.core.representation import RepresentationConfig


@dataclasses.dataclass
class JoinedColumns:
    """Joined list-valued columns: {key: (flat values, values per row)}, and misses per key."""

    columns: dict[str, tuple[np.ndarray, np.ndarray]]
    missing: dict[str, int]


def join_item_features(config: RepresentationConfig, sids: dict, embeddings: dict, watch: list[str],
                       candidate: list[str], history: list[str], history_lengths: np.ndarray) -> JoinedColumns:
    """Joins SIDs (sid_ngram, sid_spm) or content embeddings (dense) onto rows of item ids.

    Args:
      config: the representation, which decides the features joined.
      sids: {item_id: int64 [L]} from the SID table.
      embeddings: {item_id: float32 [D]} (read for dense only).
      watch, candidate: one item id per row.
      history: every row's history item ids, one row after another; `history_lengths` per row.
    """
    columns, missing = {}, {}
    n = len(watch)
    if config.has_sids:
        length = config.num_levels
        for key, ids, count in ((fk.WATCH_SID, watch, np.full(n, length)),
                                (fk.CANDIDATE_SID, candidate, np.full(n, length)),
                                (fk.HISTORY_SIDS, history, np.asarray(history_lengths) * length)):
            codes, missing[key] = _lookup(sids, ids, np.full(length, -1, np.int64))
            columns[key] = (codes.ravel(), count)
    if config.is_dense:
        for key, ids in ((fk.WATCH_EMBEDDING, watch), (fk.CANDIDATE_EMBEDDING, candidate)):
            vectors, missing[key] = _lookup(embeddings, ids, np.zeros(config.embedding_dim, np.float32))
            columns[key] = (vectors.ravel(), np.full(n, config.embedding_dim))
    return JoinedColumns(columns, missing)


def _lookup(table: dict, ids: list[str], default: np.ndarray) -> tuple[np.ndarray, int]:
    found = [table.get(i) for i in ids]
    if not found:
        return np.zeros((0, len(default)), default.dtype), 0
    rows = np.stack([default if f is None else f for f in found]).astype(default.dtype)
    return rows, sum(f is None for f in found)
