"""SPM with trained fall-back pieces: BPE-dropout-style splits of whole pieces, in training only.

At a table size the training days fill, almost every trained item is one whole-SID piece, so the
shorter pieces a new item falls back to are rarely trained. With `spm_dropout` p, each piece of a
training batch is replaced, with probability p, by its split: the fewest shorter vocabulary pieces
that spell it (ties: the longest first piece, so a SID's coarse prefix is what gets trained).
Evaluation and serving keep the plain tokenisation. The draws are stateless: the same seed, day
and batch give the same pieces.
"""

import numpy as np
import sentencepiece as spm

from pipeline.core.representation import RepresentationConfig
from pipeline.core.tf_env import tf


def piece_splits(spm_model: bytes) -> list[list[int]]:
    """Per piece id, its split into the fewest shorter vocabulary pieces (itself when it has none).

    Single symbols and control pieces (<unk>) have no split. Among splits of the fewest pieces, the
    one whose piece lengths are greatest first (lexicographically) wins.
    """
    processor = spm.SentencePieceProcessor(model_proto=spm_model)
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    normal = {piece: i for i, piece in enumerate(pieces)
              if not (processor.is_control(i) or processor.is_unknown(i) or processor.is_unused(i))}
    splits = []
    for i, piece in enumerate(pieces):
        if piece not in normal or len(piece) < 2:
            splits.append([i])
            continue
        splits.append(_fewest_shorter_pieces(piece, normal) or [i])
    return splits


def _fewest_shorter_pieces(text: str, vocabulary: dict[str, int]) -> list[int] | None:
    """The segmentation of `text` into the fewest vocabulary pieces shorter than it (None: there is none)."""
    n = len(text)
    best: list[tuple | None] = [None] * (n + 1)  # best[j]: (pieces, negated lengths, ids) for text[j:]
    best[n] = (0, (), ())
    for start in range(n - 1, -1, -1):
        options = []
        for end in range(start + 1, n + 1):
            if end - start == n or text[start:end] not in vocabulary or best[end] is None:
                continue
            count, lengths, ids = best[end]
            options.append((count + 1, (-(end - start),) + lengths, (vocabulary[text[start:end]],) + ids))
        best[start] = min(options) if options else None
    return list(best[0][2]) if best[0] is not None else None


def split_table(config: RepresentationConfig, spm_model: bytes) -> tf.RaggedTensor:
    """int64 ragged [table_rows, (pieces)]: row r is the split of piece r (itself for the OOV and ID rows)."""
    splits = piece_splits(spm_model)
    rows = splits + [[r] for r in range(len(splits), config.table_rows)]
    return tf.ragged.constant(rows, dtype=tf.int64, row_splits_dtype=tf.int64)


def drop_pieces(pieces: tf.SparseTensor, splits: tf.RaggedTensor, rate: float, seed: tf.Tensor) -> tf.SparseTensor:
    """Each piece of [B, (P)] replaced by its split with probability `rate` (stateless: `seed` is int64 [2])."""
    rows = tf.RaggedTensor.from_sparse(pieces)
    values = rows.flat_values
    dropped = tf.random.stateless_uniform(tf.shape(values), seed=seed) < rate
    count = tf.cast(tf.shape(splits.row_splits)[0] - 1, tf.int64)
    # Rows [0, count) of the doubled table keep a piece whole; rows [count, 2 count) split it.
    whole = tf.RaggedTensor.from_row_lengths(tf.range(count), tf.ones([count], tf.int64))
    table = tf.concat([whole, splits], axis=0)
    replaced = tf.gather(table, tf.where(dropped, values + count, values))
    return rows.with_flat_values(replaced).merge_dims(1, 2).to_sparse()


def dropout_fn(splits: tf.RaggedTensor, rate: float, seed: int, day: int):
    """A tf.data map over (batch index, batch) applying `drop_pieces` to every piece feature of the batch.

    `splits` is the run's `split_table`, built once: the rate and the kind were checked with the config.
    """
    from pipeline.core import features as fk

    def apply(index, batch):
        batch = dict(batch)
        for k, key in enumerate((fk.WATCH_PIECES, fk.CANDIDATE_PIECES, fk.HISTORY_PIECES)):
            stream = tf.stack([tf.constant(seed * 1_000_003 + day, tf.int64), index * 3 + k])
            batch[key] = drop_pieces(batch[key], splits, rate, stream)
        return batch

    return apply


def expected_training_pieces(pieces: list[list[int]], splits: list[list[int]], rate: float) -> np.ndarray:
    """Per item, the expected number of training lookups: each piece 1, or its split's length with `rate`."""
    return np.array([sum((1 - rate) + rate * len(splits[p]) for p in item) for item in pieces], np.float64)
