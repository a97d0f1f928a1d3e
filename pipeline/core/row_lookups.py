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


def _ragged(tensor) -> tf.RaggedTensor:
    """A parsed list feature (SparseTensor from parse_example, or ragged) as a RaggedTensor [B, (n)]."""
    return tf.RaggedTensor.from_sparse(tensor) if isinstance(tensor, tf.SparseTensor) else tensor


def count(dataset: tf.data.Dataset, rows: int, keys: tuple[str, ...] = PIECE_KEYS) -> np.ndarray:
    """Lookups per table row over a day's training batches (parsed examples), of the piece features `keys`
    (the model's: without history, the watch and candidate pieces)."""
    counts = np.zeros(rows, np.int64)
    for batch in dataset:
        for key in keys:
            counts += np.bincount(_ragged(batch[key]).flat_values.numpy(), minlength=rows)
    return counts


def untrained(batch: dict, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate piece of a batch: whether `counts` never saw its row, and whether its impression's item is
    new (first seen that day)."""
    pieces = _ragged(batch[fk.CANDIDATE_PIECES])
    new = np.repeat(batch[fk.COLD_START].numpy().ravel() == 1, pieces.row_lengths().numpy())
    return counts[pieces.flat_values.numpy()] == 0, new


def shares(never: np.ndarray, new: np.ndarray) -> dict:
    """The untrained shares of a day's candidate pieces, overall and on new items' (NaN without any)."""
    nan = float("nan")
    return {"untrained_piece_share": float(never.mean()) if len(never) else nan,
            "untrained_piece_share_new": float(never[new].mean()) if new.any() else nan}

