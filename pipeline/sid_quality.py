"""SID quality: reconstruction, codebook use, uniqueness, and the paper's prefix-similarity table.

Pure numpy, so the RQ-VAE stage and the Beam materialisation job compute the same numbers. The
prefix-similarity table uses a bounded, order-independent sample: the `sample_size` items with the
smallest fingerprint of their id (bottom-k sampling), exact when the corpus is smaller.
"""

import hashlib

import numpy as np

DEFAULT_SAMPLE_SIZE = 100_000


def fingerprint(item_id: str) -> int:
    """A stable 63-bit hash of an item id (the same in every process and on every worker)."""
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def bottom_k(item_ids, k: int) -> np.ndarray:
    """Rows of the k items with the smallest fingerprints (ties impossible in practice; by id)."""
    keys = np.array([fingerprint(i) for i in item_ids], dtype=np.int64)
    if len(keys) <= k:
        return np.arange(len(keys))
    return np.sort(np.argpartition(keys, k - 1)[:k])


def prefix_groups(sids: np.ndarray) -> list[np.ndarray]:
    """Group id of each item's prefix of length n, for n = 1..L (dense ids, any K)."""
    groups, previous = [], np.zeros(len(sids), np.int64)
    for level in range(sids.shape[1]):
        pair = previous * (int(sids[:, level].max()) + 1) + sids[:, level]
        _, previous = np.unique(pair, return_inverse=True)
        previous = previous.astype(np.int64).ravel()
        groups.append(previous)
    return groups


def level_usage(sids: np.ndarray, codebook_size: int) -> list[dict]:
    """Per level: utilisation (distinct codes / K) and perplexity (exp of the code entropy)."""
    out = []
    for level in range(sids.shape[1]):
        counts = np.bincount(sids[:, level], minlength=codebook_size)
        p = counts[counts > 0] / counts.sum()
        out.append({"level": level + 1, "codes_used": int((counts > 0).sum()),
                    "utilisation": float((counts > 0).sum() / codebook_size),
                    "perplexity": float(np.exp(-(p * np.log(p)).sum()))})
    return out


def uniqueness(sids: np.ndarray) -> dict:
    """Distinct SIDs / items, the most items on one SID, and the histogram of items per SID."""
    counts = np.bincount(prefix_groups(sids)[-1])
    sizes, how_many = np.unique(counts, return_counts=True)
    return {"items": int(len(sids)), "distinct_sids": int(len(counts)),
            "unique_sid_ratio": float(len(counts) / len(sids)), "max_items_per_sid": int(counts.max()),
            "items_per_sid_histogram": {int(s): int(c) for s, c in zip(sizes, how_many)}}


def prefix_similarity(sids: np.ndarray, embeddings: np.ndarray) -> list[dict]:
    """The paper's Table 1, computed exactly on the given items.

    For n = 1..L: the number of item pairs whose SIDs share a prefix of exactly length n
    (n = L: identical SIDs), and their average pairwise cosine similarity.
    """
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    unit = unit.astype(np.float64)
    # Per prefix length: sum over pairs within a group of cos = (|sum v|^2 - m) / 2.
    pair_cos, pairs = [], []
    for group in prefix_groups(sids):
        order = np.argsort(group, kind="stable")
        counts = np.bincount(group)
        sums = np.add.reduceat(unit[order], np.concatenate([[0], np.cumsum(counts)[:-1]]), axis=0)
        pair_cos.append(((sums ** 2).sum(1) - counts).sum() / 2.0)
        pairs.append((counts * (counts - 1) / 2.0).sum())
    pair_cos.append(0.0)
    pairs.append(0.0)
    table = []
    for n in range(sids.shape[1]):
        exact_pairs = pairs[n] - pairs[n + 1]
        table.append({
            "prefix_length": n + 1,
            "pairs": int(exact_pairs),
            "mean_cosine": float((pair_cos[n] - pair_cos[n + 1]) / exact_pairs) if exact_pairs else None,
        })
    return table


def reconstruction(x: np.ndarray, x_hat: np.ndarray) -> dict:
    """Mean squared error per dimension and R^2 (share of the embeddings' variance explained)."""
    error = ((x - x_hat) ** 2).sum()
    total = ((x - x.mean(0)) ** 2).sum()
    return {"mse": float(error / x.size), "r2": float(1.0 - error / total)}


def report(sids: np.ndarray, embeddings: np.ndarray, item_ids, codebook_size: int,
           reconstructions: np.ndarray | None = None, sample_size: int = DEFAULT_SAMPLE_SIZE) -> dict:
    """The whole SID quality report for one corpus (JSON-ready)."""
    sids = np.asarray(sids, dtype=np.int64)
    sample = bottom_k(item_ids, sample_size)
    table = prefix_similarity(sids[sample], embeddings[sample])
    # Sub-trie sizes (items per prefix of length n) are counts: cheap on the whole corpus.
    for row, counts in zip(table, (np.bincount(g) for g in prefix_groups(sids))):
        row["subtrie_size_p25"] = float(np.percentile(counts, 25))
        row["subtrie_size_p75"] = float(np.percentile(counts, 75))
    out = {"num_levels": int(sids.shape[1]), "codebook_size": int(codebook_size),
           "levels": level_usage(sids, codebook_size), **uniqueness(sids),
           "prefix_similarity": table, "prefix_similarity_sample": int(len(sample))}
    if reconstructions is not None:
        out["reconstruction"] = reconstruction(embeddings, reconstructions)
    return out


def format_report(rep: dict) -> str:
    """The report as a printed table."""
    lines = []
    if "reconstruction" in rep:
        r = rep["reconstruction"]
        lines.append(f"reconstruction: MSE {r['mse']:.6f}  R^2 {r['r2']:.4f}")
    lines.append(f"unique SIDs: {rep['distinct_sids']:,} / {rep['items']:,} items = "
                 f"{rep['unique_sid_ratio']:.4f}; most items on one SID: {rep['max_items_per_sid']}")
    lines.append(f"{'level':>5} {'codes used':>10} {'utilisation':>11} {'perplexity':>10}")
    for lv in rep["levels"]:
        lines.append(f"{lv['level']:>5} {lv['codes_used']:>10,} {lv['utilisation']:>11.1%} {lv['perplexity']:>10.1f}")
    lines.append(f"shared prefix   mean cosine        pairs   sub-trie size (p25-p75)   "
                 f"[sample of {rep['prefix_similarity_sample']:,} items]")
    for row in rep["prefix_similarity"]:
        cos = "n/a" if row["mean_cosine"] is None else f"{row['mean_cosine']:.3f}"
        lines.append(f"{row['prefix_length']:>13} {cos:>13} {row['pairs']:>12,}   "
                     f"{row['subtrie_size_p25']:g}-{row['subtrie_size_p75']:g}")
    return "\n".join(lines)
