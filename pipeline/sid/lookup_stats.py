"""Embedding lookups per item (the paper's Figure 4), overall and by popularity bucket.

Buckets split the impressed items by impressions into equal thirds of the impression mass: head
(the most impressed items that make the first third), torso, tail. A random-hash item is one
lookup, an N-gram item L/N, a SentencePiece item as many as its pieces (frequent SIDs merge into
fewer pieces), a dense item none.
"""

import numpy as np
import sentencepiece as spm

from pipeline.sid import sid_text
from pipeline.core.representation import Kind, RepresentationConfig

BUCKETS = ("head", "torso", "tail")


def popularity_buckets(impressions: np.ndarray) -> np.ndarray:
    """0 (head), 1 (torso) or 2 (tail) per item, by cumulative share of impressions."""
    impressions = np.asarray(impressions, dtype=np.float64)
    order = np.argsort(-impressions, kind="stable")
    before = (np.cumsum(impressions[order]) - impressions[order]) / impressions.sum()
    buckets = np.empty(len(impressions), np.int64)
    buckets[order] = np.minimum((before * 3).astype(np.int64), 2)
    return buckets


def pieces_per_item(config: RepresentationConfig, sids: np.ndarray, spm_model: bytes | None = None) -> np.ndarray:
    n = len(sids)
    if config.is_random_hash:
        return np.ones(n, np.int64)
    if config.is_dense:
        return np.zeros(n, np.int64)
    if config.is_ngram:
        return np.full(n, config.groups, np.int64)
    processor = spm.SentencePieceProcessor(model_proto=spm_model)
    return np.array([len(p) for p in processor.encode(sid_text.sid_text(sids, config.codebook_size))], np.int64)


def lookup_stats(config: RepresentationConfig, impressions: np.ndarray, sids: np.ndarray,
                 spm_model: bytes | None = None) -> dict:
    """Mean lookups per item overall (per item and per impression) and per popularity bucket."""
    pieces = pieces_per_item(config, sids, spm_model)
    buckets = popularity_buckets(impressions)
    out = {"representation": config.name, "table_rows": config.table_rows, "items": int(len(pieces)),
           "mean_lookups_per_item": float(pieces.mean()),
           "mean_lookups_per_impression": float((pieces * impressions).sum() / impressions.sum())}
    for index, name in enumerate(BUCKETS):
        rows = buckets == index
        out[name] = {"items": int(rows.sum()), "impressions": int(impressions[rows].sum()),
                     "mean_lookups_per_item": float(pieces[rows].mean()) if rows.any() else None}
    return out


def sweep(impressions: np.ndarray, sids: np.ndarray, codebook_size: int, buckets: int,
          vocab_sizes: list[int]) -> list[dict]:
    """Lookup stats for random hashing, every N-gram that divides L, and SPM at each V (Figure 4).

    A V the impressed SIDs cannot support is reported with the reason instead of numbers.
    """
    from pipeline.sid import spm_vocab

    num_levels = sids.shape[1]
    configs = [RepresentationConfig(kind=Kind.RANDOM_HASH, buckets=buckets)]
    configs += [RepresentationConfig(kind=Kind.SID_NGRAM, ngram=n, num_levels=num_levels, codebook_size=codebook_size)
                for n in range(1, num_levels + 1) if num_levels % n == 0 and codebook_size ** n <= 2 ** 24]  # tables that fit memory
    rows = [lookup_stats(config, impressions, sids) for config in configs]
    uniq, inverse = np.unique(sids, axis=0, return_inverse=True)
    per_sid = np.bincount(inverse.ravel(), weights=impressions).astype(np.int64)
    for vocab_size in vocab_sizes:
        config = RepresentationConfig(kind=Kind.SID_SPM, vocab_size=vocab_size, num_levels=num_levels,
                                      codebook_size=codebook_size)
        try:
            model = spm_vocab.train_sid_spm(uniq, per_sid, codebook_size, vocab_size)
        except ValueError as e:
            rows.append({"representation": config.name, "table_rows": config.table_rows, "error": str(e)})
            continue
        rows.append(lookup_stats(config, impressions, sids, model))
    return rows
