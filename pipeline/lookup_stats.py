"""Embedding lookups per item (the paper's Figure 4), overall and by popularity bucket.

Buckets split the impressed items by impressions into equal thirds of the impression mass: head
(the most impressed items that make the first third), torso, tail. A random-hash item is one
lookup, an N-gram item L/N, a SentencePiece item as many as its pieces (frequent SIDs merge into
fewer pieces), a dense item none.
"""

import numpy as np
import sentencepiece as spm

from pipeline import sid_text
from pipeline.representation import RepresentationConfig

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
    if config.kind == "random_hash":
        return np.ones(n, np.int64)
    if config.kind == "dense":
        return np.zeros(n, np.int64)
    if config.kind == "sid_ngram":
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
