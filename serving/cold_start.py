"""Instant cold start: a serving request may carry an item's content embedding instead of its SID.

The export of a SID representation holds the frozen RQ-VAE that made its SID table
(models.sid_tokenizer). For the watch item, the candidate and each history item its graph takes:
  1. the SID, when the request gives one (`watch_sid`, `candidate_sid`, `history_sids`);
  2. else the SID the frozen RQ-VAE computes from the item's content embedding, when the request
     gives one (`watch_embedding`, `candidate_embedding`: float [D]; `history_embeddings`: float [D]
     per history item, one after another);
  3. else the out-of-vocabulary row, as in training.
"No SID" is the all -1 marker or the feature left out; "no embedding" is an all-zero vector or the
feature left out (the dense join writes zeros for an item without an embedding). A row gives each
feature whole or not at all, so a client sends the history's embeddings when any history item lacks a
SID, with zeros where it has none to give. A wrong length or a non-finite value is INVALID_ARGUMENT
naming the feature. The RQ-VAE runs once per distinct item id of a request (a ranking request
repeats the watch item and the history in every row); it reads an id's first embedding.
"""

from pipeline.core import features as fk
from pipeline.core.representation import RepresentationConfig
from pipeline.core.tf_env import tf

EMBEDDING_KEYS = (fk.WATCH_EMBEDDING, fk.CANDIDATE_EMBEDDING, fk.HISTORY_EMBEDDINGS)


def ragged_rows(values: tf.SparseTensor) -> tf.RaggedTensor:
    """A parsed list feature as [B, (n)], without RaggedTensor.from_sparse's graph-time checks (parse_example's
    output is right-ragged by construction; those checks made every export seconds slower to trace)."""
    return tf.RaggedTensor.from_value_rowids(values.values, values.indices[:, 0], nrows=values.dense_shape[0],
                                             validate=False)


def row_lengths(values: tf.SparseTensor) -> tf.Tensor:
    """Values per row of a parsed list feature, int64 [B]."""
    return ragged_rows(values).row_lengths()


def request_spec(spec: dict, config: RepresentationConfig) -> dict:
    """A SID representation's request spec with every SID optional and the embeddings added (optional too)."""
    levels = config.num_levels
    out = dict(spec)
    for key in (fk.WATCH_SID, fk.CANDIDATE_SID):
        out[key] = tf.io.FixedLenFeature([levels], tf.int64, default_value=[-1] * levels)
    for key in EMBEDDING_KEYS:
        out[key] = tf.io.VarLenFeature(tf.float32)
    return out


def _length_check(values: tf.SparseTensor, allowed: tf.Tensor, key: str, what: str) -> tf.Operation:
    lengths = row_lengths(values)
    ok = tf.equal(lengths, 0) | tf.equal(lengths, allowed)
    return tf.debugging.Assert(tf.reduce_all(ok), [
        f"{key}: expected {what} (or nothing); got values", tf.boolean_mask(lengths, ~ok)[:4], "for",
        tf.boolean_mask(allowed, ~ok)[:4], "expected"], name=f"check_{key}_length")


@tf.autograph.experimental.do_not_convert
def embedding_checks(features: dict, config: RepresentationConfig) -> list[tf.Operation]:
    """Each embedding is D values per item (or absent) and finite."""
    dim = config.embedding_dim
    rows = tf.shape(features[fk.WATCH_ITEM_ID], out_type=tf.int64)[0]
    history_items = row_lengths(features[fk.HISTORY_ITEM_IDS])
    checks = []
    for key, allowed, what in ((fk.WATCH_EMBEDDING, tf.fill([rows], tf.constant(dim, tf.int64)), f"{dim} values"),
                               (fk.CANDIDATE_EMBEDDING, tf.fill([rows], tf.constant(dim, tf.int64)), f"{dim} values"),
                               (fk.HISTORY_EMBEDDINGS, history_items * dim,
                                f"{dim} values per item of {fk.HISTORY_ITEM_IDS}")):
        checks.append(_length_check(features[key], allowed, key, what))
        checks.append(tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(features[key].values)), [
            f"{key}: every value must be finite (no NaN or inf)"], name=f"check_{key}_finite"))
    return checks


def _values_or_fill(values: tf.SparseTensor, lengths: tf.Tensor, fill) -> tf.Tensor:
    """The flat values of a list feature whose rows hold `lengths` values or none; empty rows get `fill`s."""
    given = ragged_rows(values)
    filler = tf.RaggedTensor.from_row_lengths(tf.fill([tf.reduce_sum(lengths)], tf.constant(fill, values.dtype)),
                                              lengths)
    batch = tf.shape(lengths, out_type=tf.int64)[0]
    rows = tf.range(batch)
    pick = tf.where(given.row_lengths() > 0, rows, rows + batch)
    return tf.gather(tf.concat([given, filler], axis=0), pick).flat_values


def _given_embeddings(values: tf.SparseTensor, items_per_row: tf.Tensor, dim: int) -> tuple[tf.Tensor, tf.Tensor]:
    """For each item of a feature checked to hold D values per item or none per row: whether its row gives
    embeddings, and the given embeddings [given items, D] (only those: no zeros are made for the others)."""
    row_given = row_lengths(values) > 0
    return tf.repeat(row_given, items_per_row), tf.reshape(values.values, [-1, dim])


@tf.autograph.experimental.do_not_convert  # no tensor-dependent Python control flow: tracing stays fast
def resolve_sids(features: dict, config: RepresentationConfig, tokenizer) -> dict:
    """Checked request features -> the transform graph's raw features: every SID given, computed or -1.

    Only the items without a SID whose embedding is given (and not all zeros) reach the RQ-VAE, once per
    distinct id; a request that carries SIDs alone adds a few small ops.

    Args:
      features: parsed by `request_spec`, after `embedding_checks` and the SID checks.
      tokenizer: float32 [N, D] -> int64 [N, L] (models.sid_tokenizer.SidTokenizer).
    """
    levels, dim = config.num_levels, config.embedding_dim
    rows = tf.shape(features[fk.WATCH_ITEM_ID], out_type=tf.int64)[0]
    one_each = tf.ones([rows], tf.int64)
    history_items = row_lengths(features[fk.HISTORY_ITEM_IDS])
    ids = tf.concat([features[fk.WATCH_ITEM_ID], features[fk.CANDIDATE_ITEM_ID],
                     features[fk.HISTORY_ITEM_IDS].values], axis=0)
    sids = tf.concat([features[fk.WATCH_SID], features[fk.CANDIDATE_SID],
                      tf.reshape(_values_or_fill(features[fk.HISTORY_SIDS], history_items * levels, -1),
                                 [-1, levels])], axis=0)
    given, vectors = zip(*(_given_embeddings(features[key], counts, dim) for key, counts in (
        (fk.WATCH_EMBEDDING, one_each), (fk.CANDIDATE_EMBEDDING, one_each), (fk.HISTORY_EMBEDDINGS, history_items))))
    # Item i's embedding, if its row gives one, is row `position[i]` of the given embeddings, all three concatenated.
    given = tf.concat(given, axis=0)
    vectors = tf.concat(vectors, axis=0)
    position = tf.cumsum(tf.cast(given, tf.int64)) - 1
    candidates = tf.where(tf.reduce_all(tf.equal(sids, -1), axis=-1) & given)[:, 0]
    embeddings = tf.gather(vectors, tf.gather(position, candidates))
    has_embedding = tf.reduce_any(tf.not_equal(embeddings, 0.0), axis=-1)  # all zeros: "no embedding"
    needed, embeddings = tf.boolean_mask(candidates, has_embedding), tf.boolean_mask(embeddings, has_embedding)
    distinct, which = tf.unique(tf.gather(ids, needed), out_idx=tf.int64)
    first = tf.math.unsorted_segment_min(tf.range(tf.size(which, out_type=tf.int64)), which, tf.size(distinct))
    computed = tokenizer(tf.gather(embeddings, first))
    sids = tf.tensor_scatter_nd_update(sids, needed[:, None], tf.gather(computed, which))
    out = {key: value for key, value in features.items() if key not in EMBEDDING_KEYS}
    out[fk.WATCH_SID], out[fk.CANDIDATE_SID] = sids[:rows], sids[rows:2 * rows]
    out[fk.HISTORY_SIDS] = tf.RaggedTensor.from_row_lengths(tf.reshape(sids[2 * rows:], [-1]),
                                                            history_items * levels).to_sparse()
    return out
