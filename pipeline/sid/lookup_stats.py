"""Embedding lookups per item (the paper's Figure 4), overall and by popularity bucket.

Buckets split the impressed items by impressions into equal thirds of the impression mass: head
(the most impressed items that make the first third), torso, tail. A random-hash item is one
lookup, an N-gram item L/N, a SentencePiece item as many as its pieces (frequent SIDs merge into
fewer pieces), a prefix item one per prefix length, a dense item none; a hybrid (`KIND+id`) one
more. SPM with dropout is counted in training, where each piece counts its split's length with
probability p (serving counts plain SPM).
"""

import dataclasses

import numpy as np
import sentencepiece as spm

from pipeline.sid import sid_text
from pipeline.sid import spm_dropout as spm_dropout_lib
from pipeline.core.representation import Kind, RepresentationConfig
from pipeline.core.slices import popularity_buckets

BUCKETS = ("head", "torso", "tail")


def pieces_per_item(config: RepresentationConfig, sids: np.ndarray, spm_model: bytes | None = None,
                    spm_dropout: float = 0.0) -> np.ndarray:
    """Lookups of each item (float: with SPM dropout, the expected number in training)."""
    n = len(sids)
    if config.is_random_hash:
        return np.ones(n, np.int64)
    if config.is_dense:
        return np.zeros(n, np.int64)
    if config.is_ngram:
        pieces = np.full(n, config.groups, np.int64)
    elif config.is_prefix:
        pieces = np.full(n, len(config.lengths), np.int64)
    else:
        processor = spm.SentencePieceProcessor(model_proto=spm_model)
        encoded = processor.encode(sid_text.sid_text(sids, config.codebook_size))
        pieces = (spm_dropout_lib.expected_training_pieces(encoded, spm_dropout_lib.piece_splits(spm_model), spm_dropout)
                  if spm_dropout else np.array([len(p) for p in encoded], np.int64))
    return pieces + int(config.is_hybrid)


def lookup_stats(config: RepresentationConfig, impressions: np.ndarray, sids: np.ndarray,
                 spm_model: bytes | None = None, spm_dropout: float = 0.0) -> dict:
    """Mean lookups per item overall (per item and per impression) and per popularity bucket."""
    pieces = pieces_per_item(config, sids, spm_model, spm_dropout)
    buckets = popularity_buckets(impressions)
    name = config.name + (f" (training, dropout {spm_dropout:g})" if spm_dropout else "")
    out = {"representation": name, "table_rows": config.table_rows, "items": int(len(pieces)),
           "mean_lookups_per_item": float(pieces.mean()),
           "mean_lookups_per_impression": float((pieces * impressions).sum() / impressions.sum())}
    for index, name in enumerate(BUCKETS):
        rows = buckets == index
        out[name] = {"items": int(rows.sum()), "impressions": int(impressions[rows].sum()),
                     "mean_lookups_per_item": float(pieces[rows].mean()) if rows.any() else None}
    return out


def sweep(impressions: np.ndarray, sids: np.ndarray, codebook_size: int, buckets: int,
          vocab_sizes: list[int], id_buckets: int = 1024, spm_dropout: float = 0.1) -> list[dict]:
    """Lookup stats for random hashing, every N-gram that divides L, prefix N-grams (alone and hybrid),
    and SPM at each V (plain, hybrid, and in training with dropout) (Figure 4).

    A V the impressed SIDs cannot support is reported with the reason instead of numbers.
    """
    from pipeline.sid import spm_vocab

    num_levels = sids.shape[1]
    shape = dict(num_levels=num_levels, codebook_size=codebook_size)
    configs = [RepresentationConfig(kind=Kind.RANDOM_HASH, buckets=buckets)]
    configs += [RepresentationConfig(kind=Kind.SID_NGRAM, ngram=n, **shape)
                for n in range(1, num_levels + 1) if num_levels % n == 0 and codebook_size ** n <= 2 ** 24]  # tables that fit memory
    configs += [RepresentationConfig(kind=Kind.SID_PREFIX, buckets=buckets, id_buckets=i, **shape) for i in (0, id_buckets)]
    rows = [lookup_stats(config, impressions, sids) for config in configs]
    uniq, inverse = np.unique(sids, axis=0, return_inverse=True)
    per_sid = np.bincount(inverse.ravel(), weights=impressions).astype(np.int64)
    for vocab_size in vocab_sizes:
        config = RepresentationConfig(kind=Kind.SID_SPM, vocab_size=vocab_size, **shape)
        try:
            model = spm_vocab.train_sid_spm(uniq, per_sid, codebook_size, vocab_size)
        except ValueError as e:
            rows.append({"representation": config.name, "table_rows": config.table_rows, "error": str(e)})
            continue
        rows.append(lookup_stats(config, impressions, sids, model))
        rows.append(lookup_stats(dataclasses.replace(config, id_buckets=id_buckets), impressions, sids, model))
        if spm_dropout:
            rows.append(lookup_stats(config, impressions, sids, model, spm_dropout))
    return rows
