"""SIDs as text for SentencePiece: one distinct Unicode character per (level, code) pair.

Level l, code c becomes chr(BASE + l * K + c), in the supplementary private-use plane (65,534 code
points, enough for L * K up to that), so a piece never mixes levels and no normaliser touches it.
The numpy and TensorFlow versions give the same strings (tested).
"""

import numpy as np
from pipeline.core.tf_env import tf

BASE_CODEPOINT = 0xF0000
MAX_SYMBOLS = 0xFFFFD - BASE_CODEPOINT + 1


def check_alphabet(num_levels: int, codebook_size: int) -> None:
    if num_levels * codebook_size > MAX_SYMBOLS:
        raise ValueError(f"L x K = {num_levels * codebook_size} symbols do not fit the {MAX_SYMBOLS} "
                         "code points of the private-use plane")


def sid_text(sids: np.ndarray, codebook_size: int) -> list[str]:
    """int SIDs [N, L] (codes in [0, K)) -> N strings of L characters."""
    sids = np.asarray(sids, dtype=np.int64)
    check_alphabet(sids.shape[1], codebook_size)
    codepoints = BASE_CODEPOINT + np.arange(sids.shape[1])[None, :] * codebook_size + sids
    return ["".join(map(chr, row)) for row in codepoints]


def sid_text_tf(sids: tf.Tensor, codebook_size: int) -> tf.Tensor:
    """int64 SIDs [B, L] -> tf.string [B], in the graph."""
    num_levels = sids.shape[-1]
    check_alphabet(num_levels, codebook_size)
    offsets = tf.range(num_levels, dtype=tf.int64)[None, :] * codebook_size
    return tf.strings.unicode_encode(tf.cast(BASE_CODEPOINT + offsets + sids, tf.int32), "UTF-8")
