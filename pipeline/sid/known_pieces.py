"""The SentencePiece pieces of the SID table's SIDs, held in the graph as constants.

Tokenizing is the costly part of the sid_spm graph (unique, encode as text, BPE merges), and every SID
the lineage was fitted with is known when the graph is built. So the graph holds each known SID's pieces,
tokenized once by the same op, as constants: the 64-bit keys of the SIDs, sorted, and their pieces. A SID
is found by a binary search of its key (tf.searchsorted): the codes packed into the key when L x bits(K)
fits in 63 bits (exact), else a fingerprint whose match is checked against the stored codes (a collision
costs a tokenization, never a wrong piece). A SID has at most L pieces (one symbol each at worst), so the
rows are held padded to L. The tokenizer runs only for SIDs the constants lack: items that got their SID
after the lineage was fitted, and items without one.

Not a tf.lookup hash table: TensorFlow warns that a table created in TF Transform's traced
preprocessing_fn is initialised again on every call of the function (every batch, here from 800,000
keys); constants need no initialisation.
"""

import dataclasses
import math

import numpy as np

from pipeline.core.tf_env import tf

# The fingerprint of SIDs too long to pack: a running polynomial of the codes (each + 1, so a 0 code
# still moves it), then splitmix64's finaliser, whose bits all depend on every code.
MULTIPLIER = 0x9E3779B97F4A7C15
SPLITMIX = (30, 0xBF58476D1CE4E5B9, 27, 0x94D049BB133111EB, 31)
TOKENIZE_BATCH = 65_536
PAD = -1


@dataclasses.dataclass(frozen=True)
class KnownPieces:
    """Distinct SIDs [N, L] (int32, codes < `codebook_size`) sorted by their keys [N] (int64, distinct), and
    their pieces padded to L [N, L] (int32, PAD after the last) and counted [N] (int32)."""

    codebook_size: int
    keys: np.ndarray
    sids: np.ndarray
    padded: np.ndarray
    lengths: np.ndarray

    @property
    def size(self) -> int:
        return len(self.keys)

    @property
    def packed(self) -> bool:
        return packs(self.sids.shape[1], self.codebook_size)


def packs(num_levels: int, codebook_size: int) -> bool:
    """Whether a SID's codes fit one non-negative int64 (then the key is the SID itself)."""
    return num_levels * max(1, math.ceil(math.log2(codebook_size))) <= 63


def key(sids: tf.Tensor, codebook_size: int) -> tf.Tensor:
    """int64 SIDs [B, L] (codes in [0, K)) -> int64 keys [B]: the packed codes, or their fingerprint."""
    num_levels = sids.shape[-1]
    if packs(num_levels, codebook_size):
        bits = max(1, math.ceil(math.log2(codebook_size)))
        shifts = tf.constant([bits * (num_levels - 1 - level) for level in range(num_levels)], tf.int64)
        return tf.reduce_sum(tf.bitwise.left_shift(sids, shifts[None, :]), axis=1)
    codes = tf.cast(sids + 1, tf.uint64)
    z = tf.zeros_like(codes[:, 0])
    for level in range(num_levels):
        z = z * tf.constant(MULTIPLIER, tf.uint64) + codes[:, level]
    return tf.bitcast(splitmix64(z), tf.int64)


def splitmix64(z: tf.Tensor) -> tf.Tensor:
    """splitmix64's finaliser of uint64 `z`: every output bit depends on every input bit."""
    shift1, mul1, shift2, mul2, shift3 = SPLITMIX
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(shift1, tf.uint64))) * tf.constant(mul1, tf.uint64)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(shift2, tf.uint64))) * tf.constant(mul2, tf.uint64)
    return tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(shift3, tf.uint64)))


def build(sids: np.ndarray, codebook_size: int, tokenize) -> KnownPieces:
    """The known pieces of `sids` [N, L] (codes in [0, K); duplicates allowed), tokenized by `tokenize` (int64
    SIDs [B, L] -> ragged int64 pieces [B, (P)]), the very function the graph falls back to."""
    num_levels = np.shape(sids)[-1]
    distinct = np.unique(np.asarray(sids, np.int64).reshape(-1, num_levels), axis=0)
    if len(distinct) and (distinct.min() < 0 or distinct.max() >= codebook_size):
        raise ValueError(f"known SIDs must have codes in [0, {codebook_size}) (an item without a SID is not known)")
    keys, padded, lengths = [], [], []
    for i in range(0, len(distinct), TOKENIZE_BATCH):
        chunk = tf.constant(distinct[i:i + TOKENIZE_BATCH])
        keys.append(key(chunk, codebook_size).numpy())
        pieces = tokenize(chunk)
        padded.append(pieces.to_tensor(default_value=PAD, shape=[None, num_levels]).numpy())
        lengths.append(pieces.row_lengths().numpy())
    keys = np.concatenate(keys or [np.zeros(0, np.int64)])
    # Two SIDs with one fingerprint (about N^2 / 2^65): only the first is kept; the other is tokenized.
    keys, first = np.unique(keys, return_index=True)
    padded = np.concatenate(padded or [np.zeros((0, num_levels), np.int64)])[first]
    lengths = np.concatenate(lengths or [np.zeros(0, np.int64)])[first]
    if padded.size and padded.max() >= 2 ** 31:
        raise ValueError("piece ids must fit int32")
    return KnownPieces(codebook_size=codebook_size, keys=keys, sids=distinct[first].astype(np.int32),
                       padded=padded.astype(np.int32), lengths=lengths.astype(np.int32))


def pieces(sids: tf.Tensor, known: KnownPieces, tokenize) -> tf.RaggedTensor:
    """int64 SIDs [B, L] -> ragged int64 pieces [B, (P)]: the known SIDs' from the table, the others from
    `tokenize` (which must be the function `known` was built with, so the outputs are identical)."""
    if known.size == 0:
        return tokenize(sids)
    num_levels = known.sids.shape[1]
    keys = tf.constant(known.keys)
    # A code outside [0, K) (-1: no SID) is never known; clipped, it still makes a valid key to look up.
    valid = tf.reduce_all((sids >= 0) & (sids < known.codebook_size), axis=1)
    query = key(tf.clip_by_value(sids, 0, known.codebook_size - 1), known.codebook_size)
    at = tf.minimum(tf.searchsorted(keys, query), known.size - 1)
    found = valid & tf.equal(tf.gather(keys, at), query)
    if not known.packed:
        found &= tf.reduce_all(tf.equal(tf.cast(tf.gather(tf.constant(known.sids), at), tf.int64), sids), axis=1)
    unknown = tf.logical_not(found)
    tokenized = tokenize(tf.boolean_mask(sids, unknown))
    # Row i: its known row, or the tokenized row of its rank among the unknown SIDs, both padded to L.
    batch = tf.shape(sids, out_type=tf.int64)[0]
    which = tf.where(found, tf.range(batch), batch + tf.cumsum(tf.cast(unknown, tf.int64)) - 1)
    padded = tf.gather(tf.concat([tf.cast(tf.gather(tf.constant(known.padded), at), tf.int64),
                                  tokenized.to_tensor(default_value=PAD, shape=[None, num_levels])], axis=0), which)
    lengths = tf.gather(tf.concat([tf.cast(tf.gather(tf.constant(known.lengths), at), tf.int64),
                                   tokenized.row_lengths()], axis=0), which)
    return tf.RaggedTensor.from_tensor(padded, lengths=lengths)
