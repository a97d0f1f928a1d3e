"""Learn the SentencePiece vocabulary of SIDs (the paper's SPM-SID), weighted by impressions.

BPE, not unigram: BPE merges the most frequent adjacent code runs until exactly `vocab_size`
pieces exist, so frequent (head) SIDs become one or two pieces and rare (tail) SIDs fall back to
short pieces, and the requested table size is reached. The unigram trainer prunes to at most the
requested size and, on SID strings, stopped well short of it (22 of 40 pieces on a toy corpus
where BPE reached 40), leaving table rows unused.
"""

import io
import os
import tempfile

import numpy as np
import sentencepiece as spm

from pipeline.sid import sid_text

_TRAINER_FLAGS = dict(
    model_type="bpe", character_coverage=1.0, add_dummy_prefix=False, split_by_unicode_script=False,
    normalization_rule_name="identity", split_by_whitespace=False, bos_id=-1, eos_id=-1, unk_id=0,
    pad_id=-1, minloglevel=2)


def _train(tsv_path: str, vocab_size: int, max_piece_length: int, hard_limit: bool) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(input=tsv_path, input_format="tsv", model_writer=model,
                                   vocab_size=vocab_size, hard_vocab_limit=hard_limit,
                                   max_sentencepiece_length=max_piece_length, **_TRAINER_FLAGS)
    return model.getvalue()


class VocabularyUnsupported(ValueError):
    """The SIDs cannot support the table size asked for; `supported` is the nearest size that works."""

    def __init__(self, message: str, supported: int):
        super().__init__(message)
        self.supported = supported


class VocabularyTooLarge(VocabularyUnsupported):
    """More pieces than the SIDs can make; `supported` is the largest that works."""


class VocabularyTooSmall(VocabularyUnsupported):
    """Fewer pieces than the SIDs' (level, code) symbols plus <unk>; `supported` is the smallest that works."""


def train_sid_spm(sids: np.ndarray, impressions: np.ndarray, codebook_size: int, vocab_size: int) -> bytes:
    """Trains a BPE SentencePiece model on SID strings, each weighted by its impressions.

    Args:
      sids: int [N, L] distinct SIDs of the impressed items.
      impressions: int [N] impressions of each SID in the training days (its sentence frequency).
      codebook_size: K, for the SID alphabet.
      vocab_size: V, the table size asked for (piece 0 is <unk>).

    Returns:
      The serialized model (bytes), V pieces.

    Raises:
      ValueError: if V is below the SID alphabet or more than these SIDs support; the message gives
        the bound that works.
    """
    sids = np.asarray(sids)
    if len(sids) != len(impressions) or not len(sids):
        raise ValueError(f"need one impression count per SID, got {len(sids)} SIDs, {len(impressions)} counts")
    symbols = sum(len(np.unique(sids[:, level])) for level in range(sids.shape[1]))
    if vocab_size <= symbols:
        raise VocabularyTooSmall(f"vocab_size {vocab_size} is too small: the SIDs use {symbols} (level, code) "
                                 f"symbols, each a piece of its own, plus <unk>; ask for at least {symbols + 1}",
                                 symbols + 1)
    with tempfile.TemporaryDirectory() as tmp:  # local: the SentencePiece trainer reads a local file
        path = os.path.join(tmp, "sids.tsv")
        with open(path, "w", encoding="utf-8") as f:  # local: the trainer's input, in the scratch above
            for text, count in zip(sid_text.sid_text(sids, codebook_size), impressions):
                f.write(f"{text}\t{int(count)}\n")
        try:
            return _train(path, vocab_size, sids.shape[1], hard_limit=True)
        except RuntimeError as e:
            if "Vocabulary size" not in str(e):
                raise
            supported = spm.SentencePieceProcessor(
                model_proto=_train(path, vocab_size, sids.shape[1], hard_limit=False)).get_piece_size()
            raise VocabularyTooLarge(
                f"vocab_size {vocab_size} is more than the {len(sids):,} SIDs of the training days support: at most "
                f"{supported} pieces. Ask for a table of at most {supported} rows, or train on more days",
                supported) from e
