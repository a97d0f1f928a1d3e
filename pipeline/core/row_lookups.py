"""Which item-table rows training has looked up: counts the day loop keeps in its checkpoint.

A row no training impression looked up keeps its random initialisation; an item whose pieces land on such
rows is ranked by noise. The day loop adds each training day's lookups (the pieces of the watch item, the
candidate and, with history, the history items, of the rows it trained on) to a per-row count saved with
the model, so a resumed run counts every day once. On each evaluation day, before training on it, it
reports the share of the day's candidate pieces whose rows were never looked up: over every impression
and over the impressions of items first seen that day (pipeline.sid.sid_health reads them as a sign of an
aging lineage).
"""

import numpy as np

from pipeline.core import features as fk
from pipeline.core.tf_env import tf

PIECE_KEYS = (fk.WATCH_PIECES, fk.CANDIDATE_PIECES, fk.HISTORY_PIECES)


def _values(tensor) -> np.ndarray:
    if isinstance(tensor, tf.SparseTensor):
        return tensor.values.numpy()
    if isinstance(tensor, tf.RaggedTensor):
        return tensor.flat_values.numpy()
    return tensor.numpy().ravel()


def count(dataset: tf.data.Dataset, rows: int, keys: tuple[str, ...] = PIECE_KEYS) -> np.ndarray:
    """Lookups per table row over a day's training batches (parsed examples), of the piece features `keys`
    (the model's: without history, the watch and candidate pieces)."""
    counts = np.zeros(rows, np.int64)
    for batch in dataset:
        for key in keys:
            counts += np.bincount(_values(batch[key]), minlength=rows)
    return counts


def untrained_shares(dataset: tf.data.Dataset, counts: np.ndarray) -> dict:
    """Over a day's batches: the share of candidate piece lookups on rows `counts` never saw, overall and on
    the impressions of items first seen that day (NaN without such impressions)."""
    untrained, total, untrained_new, total_new = 0, 0, 0, 0
    for batch in dataset:
        pieces = tf.RaggedTensor.from_sparse(batch[fk.CANDIDATE_PIECES]) if isinstance(
            batch[fk.CANDIDATE_PIECES], tf.SparseTensor) else batch[fk.CANDIDATE_PIECES]
        never = (counts[pieces.flat_values.numpy()] == 0).astype(np.int64)
        new = np.repeat(batch[fk.COLD_START].numpy().ravel() == 1, pieces.row_lengths().numpy())
        untrained, total = untrained + int(never.sum()), total + len(never)
        untrained_new, total_new = untrained_new + int(never[new].sum()), total_new + int(new.sum())
    return {"untrained_piece_share": untrained / total if total else float("nan"),
            "untrained_piece_share_new": untrained_new / total_new if total_new else float("nan")}
