"""SID quality: reconstruction, codebook use, uniqueness, and the paper's prefix-similarity table.

Pure numpy, so the RQ-VAE stage and the Beam materialisation job compute the same numbers. The
prefix-similarity table uses a bounded, order-independent sample: the `sample_size` items with the
smallest fingerprint of their id (bottom-k sampling), exact when the corpus is smaller.
"""

import hashlib

import numpy as np

from pipeline.core.configs import PREFIX_SAMPLE_SIZE

DEFAULT_SAMPLE_SIZE = PREFIX_SAMPLE_SIZE


def fingerprint(item_id: str) -> int:
    """A stable 63-bit hash of an item id (the same in every process and on every worker)."""
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def bottom_k(item_ids, k: int) -> np.ndarray:
    """Rows of the k items with the smallest fingerprints, in fingerprint order (order-independent)."""
    keys = np.array([fingerprint(i) for i in item_ids], dtype=np.int64)
    rows = np.argpartition(keys, k - 1)[:k] if len(keys) > k else np.arange(len(keys))
    return rows[np.argsort(keys[rows], kind="stable")]


def prefix_groups(sids: np.ndarray) -> list[np.ndarray]:
    """Group id of each item's prefix of length n, for n = 1..L (dense ids, any K)."""
    groups, previous = [], np.zeros(len(sids), np.int64)
    for level in range(sids.shape[1]):
        pair = previous * (int(sids[:, level].max()) + 1) + sids[:, level]
        _, previous = np.unique(pair, return_inverse=True)
        previous = previous.astype(np.int64).ravel()
        groups.append(previous)
    return groups


def code_counts(sids: np.ndarray, codebook_size: int) -> np.ndarray:
    """Items per code, per level: int64 [L, K]."""
    return np.stack([np.bincount(sids[:, l], minlength=codebook_size) for l in range(sids.shape[1])])


def level_usage(counts: np.ndarray) -> list[dict]:
    """Per level, from code counts [L, K]: utilisation (codes used / K) and perplexity (exp entropy)."""
    out = []
    for level, row in enumerate(np.asarray(counts)):
        p = row[row > 0] / row.sum()
        out.append({"level": level + 1, "codes_used": int((row > 0).sum()),
                    "utilisation": float((row > 0).sum() / len(row)),
                    "perplexity": float(np.exp(-(p * np.log(p)).sum()))})
    return out


def size_histogram(group: np.ndarray) -> dict[int, int]:
    """{group size: number of groups} for dense group ids."""
    sizes, how_many = np.unique(np.bincount(group), return_counts=True)
    return {int(s): int(c) for s, c in zip(sizes, how_many)}


def prefix_size_histograms(sids: np.ndarray) -> list[dict[int, int]]:
    """Per prefix length n = 1..L: {sub-trie size: number of prefixes of that size}."""
    return [size_histogram(group) for group in prefix_groups(sids)]


def uniqueness(items_per_sid: dict[int, int]) -> dict:
    """From {items on a SID: number of SIDs}: distinct SIDs / items and the most items on one SID."""
    items = sum(size * count for size, count in items_per_sid.items())
    distinct = sum(items_per_sid.values())
    return {"items": int(items), "distinct_sids": int(distinct), "unique_sid_ratio": float(distinct / items),
            "max_items_per_sid": int(max(items_per_sid)),
            "items_per_sid_histogram": {int(k): int(v) for k, v in sorted(items_per_sid.items())}}


def percentile(histogram: dict[int, int], q: float) -> float:
    """numpy's linear-interpolation percentile of the values a {value: count} histogram holds."""
    values = np.array(sorted(histogram), dtype=np.float64)
    ends = np.cumsum([histogram[v] for v in sorted(histogram)])
    position = q / 100.0 * (ends[-1] - 1)
    low, high = (values[np.searchsorted(ends, r, side="right")] for r in (np.floor(position), np.ceil(position)))
    return float(low + (high - low) * (position - np.floor(position)))


def prefix_similarity(sids: np.ndarray, embeddings: np.ndarray) -> list[dict]:
    """The paper's Table 1, computed exactly on the given items.

    For n = 1..L: the number of item pairs whose SIDs share a prefix of exactly length n
    (n = L: identical SIDs), and their average pairwise cosine similarity.
    """
    groups = prefix_groups(sids)
    # Only items that share at least their first code with another item can form pairs.
    paired = np.bincount(groups[0])[groups[0]] > 1
    sids, groups = sids[paired], [g[paired] for g in groups]
    unit = embeddings[paired].astype(np.float64)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    # Per prefix length: sum over pairs within a group of cos = (|sum v|^2 - m) / 2.
    pair_cos, pairs = [], []
    for group in groups:
        counts = np.bincount(group)
        shared = counts[group] > 1  # items alone under a prefix form no pair
        order = np.argsort(group[shared], kind="stable")
        sizes = counts[counts > 1]
        if sizes.size:
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            sums = np.add.reduceat(unit[shared][order], starts, axis=0)
            pair_cos.append(((sums ** 2).sum(1) - sizes).sum() / 2.0)
        else:
            pair_cos.append(0.0)
        pairs.append((sizes * (sizes - 1) / 2.0).sum())
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


def finish_report(counts: np.ndarray, prefix_histograms: list[dict[int, int]], similarity: list[dict],
                  sample_size: int) -> dict:
    """The report from its aggregates; the Beam job builds the same aggregates with combiners."""
    table = [dict(row, subtrie_size_p25=percentile(hist, 25), subtrie_size_p75=percentile(hist, 75))
             for row, hist in zip(similarity, prefix_histograms)]
    return {"num_levels": int(counts.shape[0]), "codebook_size": int(counts.shape[1]),
            "levels": level_usage(counts), **uniqueness(prefix_histograms[-1]),
            "prefix_similarity": table, "prefix_similarity_sample": int(sample_size)}


def report(sids: np.ndarray, embeddings: np.ndarray, item_ids, codebook_size: int,
           reconstructions: np.ndarray | None = None, sample_size: int = DEFAULT_SAMPLE_SIZE) -> dict:
    """The whole SID quality report for one corpus (JSON-ready).

    Sub-trie sizes and codebook use cover every item; the prefix-similarity cosines cover the
    bottom-k sample of item-id fingerprints.
    """
    sids = np.asarray(sids, dtype=np.int64)
    sample = bottom_k(item_ids, sample_size)
    out = finish_report(code_counts(sids, codebook_size), prefix_size_histograms(sids),
                        prefix_similarity(sids[sample], embeddings[sample]), len(sample))
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
