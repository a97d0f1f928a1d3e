"""preprocessing_fn: the SID adaptation baked into the input graph (TF Transform; no Beam, no Keras).

Every representation turns the watch item, the candidate and each history item into pieces of one
shared item table (random_hash, sid_ngram, sid_spm, sid_prefix), or passes the content embeddings
through (dense). Items without a SID (codes of -1) get the table's out-of-vocabulary row. A hybrid
(`KIND+id`) adds to every item's SID pieces one random-hash ID piece, after the SID rows.
"""

from pipeline.core.tf_env import tf

from pipeline.core import features as fk
from pipeline.sid import known_pieces, sid_text
from pipeline.core.representation import RepresentationConfig


def raw_feature_spec(config: RepresentationConfig) -> dict:
    """The tf.Example spec of the joined logs this preprocessing_fn reads (labels included)."""
    spec = {
        fk.WATCH_ITEM_ID: tf.io.FixedLenFeature([], tf.string),
        fk.CANDIDATE_ITEM_ID: tf.io.FixedLenFeature([], tf.string),
        fk.HISTORY_ITEM_IDS: tf.io.VarLenFeature(tf.string),
        fk.CLICK: tf.io.FixedLenFeature([], tf.int64),
        fk.ENGAGEMENT: tf.io.FixedLenFeature([], tf.float32),
        fk.DAY: tf.io.FixedLenFeature([], tf.int64),
        fk.CANDIDATE_FIRST_DAY: tf.io.FixedLenFeature([], tf.int64),
        fk.USER_ID: tf.io.FixedLenFeature([], tf.string),
    }
    if config.has_sids:
        spec[fk.WATCH_SID] = tf.io.FixedLenFeature([config.num_levels], tf.int64)
        spec[fk.CANDIDATE_SID] = tf.io.FixedLenFeature([config.num_levels], tf.int64)
        spec[fk.HISTORY_SIDS] = tf.io.VarLenFeature(tf.int64)
    if config.is_dense:
        spec[fk.WATCH_EMBEDDING] = tf.io.FixedLenFeature([config.embedding_dim], tf.float32)
        spec[fk.CANDIDATE_EMBEDDING] = tf.io.FixedLenFeature([config.embedding_dim], tf.float32)
    return spec


def labelled_feature_spec(raw_spec: dict) -> dict:
    """The spec of a logged row checked by `transform_features`: a raw spec without the user (never a model input)."""
    return {key: spec for key, spec in raw_spec.items() if key != fk.USER_ID}


def serving_feature_spec(raw_spec: dict) -> dict:
    """The spec of a serving request: a raw spec without the labels and the evaluation-only keys."""
    excluded = set(fk.LABEL_KEYS) | set(fk.EVALUATION_KEYS)
    return {key: spec for key, spec in raw_spec.items() if key not in excluded}


def ngram_pieces(sids: tf.Tensor, config: RepresentationConfig) -> tf.Tensor:
    """int64 [B, L] -> int64 [B, L/N]: piece j = j K^N + the base-K number of group j's codes."""
    k, n = config.codebook_size, config.ngram
    groups = tf.reshape(sids, [-1, config.groups, n])
    weights = tf.constant([k ** (n - 1 - i) for i in range(n)], tf.int64)
    local = tf.reduce_sum(groups * weights, axis=-1)
    pieces = local + tf.range(config.groups, dtype=tf.int64)[None, :] * k ** n
    missing = tf.reduce_any(groups < 0, axis=-1)
    return tf.where(missing, tf.constant(config.oov_piece, tf.int64), pieces)


def spm_pieces(sids: tf.Tensor, config: RepresentationConfig, spm_model: bytes,
               known: known_pieces.KnownPieces | None = None) -> tf.RaggedTensor:
    """int64 [B, L] -> ragged int64 [B, (pieces)] by the SentencePiece model.

    The model is Python bytes at graph-construction time: SentencepieceTokenizer keeps it as an op
    attribute, so it travels inside the transform graph and the serving SavedModel. With `known` (the
    pieces of the SID table's SIDs, built by `known_spm_pieces` from the same model), only the SIDs it
    lacks are tokenized.
    """
    tokenize = _spm_tokenizer(config, spm_model)
    return tokenize(sids) if known is None else known_pieces.pieces(tf.cast(sids, tf.int64), known, tokenize)


def known_spm_pieces(sids, config: RepresentationConfig, spm_model: bytes) -> known_pieces.KnownPieces:
    """The pieces of the SIDs [N, L] (a SID table's), as `spm_pieces` gives them, to hold in the graph."""
    return known_pieces.build(sids, config.codebook_size, _spm_tokenizer(config, spm_model))


def _spm_tokenizer(config: RepresentationConfig, spm_model: bytes):
    """int64 SIDs [B, L] -> ragged int64 pieces [B, (P)] by the model; the OOV piece for a SID with a -1 code."""
    import tensorflow_text as tf_text

    tokenizer = tf_text.SentencepieceTokenizer(model=spm_model, out_type=tf.int32)

    def tokenize(sids: tf.Tensor) -> tf.RaggedTensor:
        sids = tf.cast(sids, tf.int64)
        # Once per distinct SID: a batch repeats the watch item and the history in row after row, and a
        # SID's pieces do not depend on the row it is in.
        distinct, row = tf.raw_ops.UniqueV2(x=sids, axis=tf.constant([0], tf.int64))
        distinct = tf.reshape(distinct, [-1, config.num_levels])  # UniqueV2 drops the static L
        text = sid_text.sid_text_tf(tf.maximum(distinct, 0), config.codebook_size)
        pieces = tf.cast(tokenizer.tokenize(text), tf.int64)
        return tf.gather(_oov_where(tf.reduce_any(distinct < 0, axis=-1), pieces, config.oov_piece), row)

    return tokenize


# sid_prefix's fingerprint (numpy-free, so a plain-Python reference can recompute it): a running
# polynomial of the codes (each + 1, so a 0 code still moves it), then splitmix64's finaliser of it
# XOR the prefix length, whose bits all depend on every code; the piece is that mod `buckets`.
PREFIX_MULTIPLIER = known_pieces.MULTIPLIER


def prefix_pieces(sids: tf.Tensor, config: RepresentationConfig) -> tf.RaggedTensor:
    """int64 [B, L] -> int64 [B, (P)]: one piece per prefix length of `config.lengths` (OOV row without a SID)."""
    codes = tf.cast(tf.maximum(sids, 0) + 1, tf.uint64)
    spread = tf.zeros_like(codes[:, 0])
    pieces = []
    for length in range(1, config.num_levels + 1):
        spread = spread * tf.constant(PREFIX_MULTIPLIER, tf.uint64) + codes[:, length - 1]
        if length in config.lengths:
            key = known_pieces.splitmix64(tf.bitwise.bitwise_xor(spread, tf.constant(length, tf.uint64)))
            pieces.append(tf.cast(tf.math.floormod(key, tf.constant(config.buckets, tf.uint64)), tf.int64))
    pieces = tf.RaggedTensor.from_tensor(tf.stack(pieces, axis=1))
    return _oov_where(tf.reduce_any(sids < 0, axis=-1), pieces, config.oov_piece)


def id_pieces(item_ids: tf.Tensor, config: RepresentationConfig) -> tf.Tensor:
    """The hybrid's ID piece of each item id: the row after the SID rows, hash(item_id) mod id_buckets."""
    return config.sid_rows + tf.strings.to_hash_bucket_fast(item_ids, config.id_buckets)


def _oov_where(missing: tf.Tensor, pieces: tf.RaggedTensor, oov_piece: int) -> tf.RaggedTensor:
    """Rows where `missing` is true become the single OOV piece."""
    batch = tf.shape(missing, out_type=tf.int64)[0]
    oov = tf.RaggedTensor.from_tensor(tf.fill([batch, 1], tf.constant(oov_piece, tf.int64)))
    rows = tf.range(batch)
    return tf.gather(tf.concat([pieces, oov], axis=0), tf.where(missing, rows + batch, rows))


def item_pieces(sids: tf.Tensor, item_ids: tf.Tensor, config: RepresentationConfig,
                spm_model: bytes | None, known: known_pieces.KnownPieces | None = None) -> tf.RaggedTensor:
    """int64 SIDs [B, L] and their items' ids [B] -> each item's pieces [B, (pieces)] (SID kinds)."""
    if config.is_ngram:
        pieces = tf.RaggedTensor.from_tensor(ngram_pieces(sids, config))
    elif config.is_prefix:
        pieces = prefix_pieces(sids, config)
    else:
        pieces = spm_pieces(sids, config, spm_model, known)
    if config.is_hybrid:
        pieces = tf.concat([pieces, id_pieces(item_ids, config)[:, None]], axis=1)
    return pieces


def _sid_pieces(inputs: dict, config, spm_model, known) -> tuple[tf.SparseTensor, tf.SparseTensor, tf.SparseTensor]:
    """The pieces of the watch item [B, (P)], the candidate [B, (P)] and every history item, per row [B, (P)].

    Every item of the batch goes through `item_pieces` in one call: SentencePiece then tokenizes each
    distinct SID once, whichever role and row it appears in.
    """
    watch, candidate = inputs[fk.WATCH_SID], inputs[fk.CANDIDATE_SID]
    codes = tf.RaggedTensor.from_sparse(inputs[fk.HISTORY_SIDS])
    items_per_row = codes.row_lengths() // config.num_levels
    history = tf.reshape(codes.flat_values, [-1, config.num_levels])
    rows = tf.shape(watch, out_type=tf.int64)[0]
    pieces = item_pieces(tf.concat([tf.cast(watch, tf.int64), tf.cast(candidate, tf.int64), history], axis=0),
                         tf.concat([inputs[fk.WATCH_ITEM_ID], inputs[fk.CANDIDATE_ITEM_ID],
                                    inputs[fk.HISTORY_ITEM_IDS].values], axis=0), config, spm_model, known)
    history_pieces = tf.RaggedTensor.from_row_lengths(pieces[2 * rows:], items_per_row).merge_dims(1, 2)
    return pieces[:rows].to_sparse(), pieces[rows:2 * rows].to_sparse(), history_pieces.to_sparse()


def make_preprocessing_fn(config: RepresentationConfig, spm_model: bytes | None = None, known_sids=None):
    """Builds the preprocessing_fn of one representation.

    Args:
      config: the representation.
      spm_model: the serialized SentencePiece model (sid_spm only), baked into the graph.
      known_sids: sid_spm: the SID table's SIDs [N, L], whose pieces the graph holds (tokenized here, once);
        other SIDs are tokenized in the graph. The outputs are the same with or without them.

    Raises:
      ValueError: sid_spm without a model.
    """
    if config.uses_spm and not spm_model:
        raise ValueError("sid_spm needs the trained SentencePiece model (bytes)")
    known = (known_spm_pieces(known_sids, config, spm_model)
             if config.uses_spm and known_sids is not None and len(known_sids) else None)

    def preprocessing_fn(inputs):
        outputs = {key: inputs[key] for key in fk.LABEL_KEYS}
        outputs[fk.DAY] = inputs[fk.DAY]
        outputs[fk.COLD_START] = tf.cast(tf.equal(inputs[fk.CANDIDATE_FIRST_DAY], inputs[fk.DAY]), tf.int64)
        outputs[fk.USER_KEY] = tf.strings.to_hash_bucket_fast(inputs[fk.USER_ID], fk.USER_KEY_BUCKETS)
        outputs[fk.ITEM_AGE] = inputs[fk.DAY] - inputs[fk.CANDIDATE_FIRST_DAY]
        outputs[fk.CANDIDATE_KEY] = tf.strings.to_hash_bucket_fast(inputs[fk.CANDIDATE_ITEM_ID], fk.USER_KEY_BUCKETS)
        history_ids = inputs[fk.HISTORY_ITEM_IDS]
        outputs[fk.HISTORY_LENGTH] = tf.RaggedTensor.from_sparse(history_ids).row_lengths()
        if config.is_random_hash:
            for raw, out in ((fk.WATCH_ITEM_ID, fk.WATCH_PIECES), (fk.CANDIDATE_ITEM_ID, fk.CANDIDATE_PIECES)):
                buckets = tf.strings.to_hash_bucket_fast(inputs[raw], config.buckets)
                # Sparse like every other representation's pieces (from_dense would drop bucket 0).
                outputs[out] = tf.RaggedTensor.from_tensor(buckets[:, None]).to_sparse()
            outputs[fk.HISTORY_PIECES] = tf.SparseTensor(
                history_ids.indices, tf.strings.to_hash_bucket_fast(history_ids.values, config.buckets),
                history_ids.dense_shape)
        elif config.is_dense:
            outputs[fk.WATCH_EMBEDDING] = inputs[fk.WATCH_EMBEDDING]
            outputs[fk.CANDIDATE_EMBEDDING] = inputs[fk.CANDIDATE_EMBEDDING]
        else:
            outputs[fk.WATCH_PIECES], outputs[fk.CANDIDATE_PIECES], outputs[fk.HISTORY_PIECES] = _sid_pieces(
                inputs, config, spm_model, known)
        return outputs

    return preprocessing_fn
