"""SID statistics with Beam combiners; the same aggregates as `pipeline.sid.sid_quality.report`."""

from typing import NamedTuple

import hashlib

import apache_beam as beam
import numpy as np

from pipeline.sid import sid_quality


class SidChunk(NamedTuple):
    """Materialised rows as arrays: ids, SIDs int64 [n, L], and embeddings [n, D] (None if unknown)."""

    item_ids: np.ndarray
    sids: np.ndarray
    embeddings: np.ndarray | None


class SumArraysFn(beam.CombineFn):
    """Element-wise sum of equally shaped arrays (zeros of `shape` when there are none)."""

    def __init__(self, shape):
        self._shape = tuple(shape)

    def create_accumulator(self):
        return np.zeros(self._shape, np.int64)

    def add_input(self, acc, value):
        return acc + value

    def merge_accumulators(self, accs):
        return sum(accs, self.create_accumulator())

    def extract_output(self, acc):
        return acc


class BottomKFn(beam.CombineFn):
    """Keeps the k rows with the smallest fingerprints: (fingerprints, sids, embeddings) arrays.

    The accumulator is a list of parts, trimmed to k rows only once it holds 2k, so adding a part
    costs amortised O(part) rather than a copy of everything kept so far.
    """

    def __init__(self, k: int):
        self._k = k

    def create_accumulator(self):
        return []

    def _trim(self, parts):
        fps, sids, embeddings = (np.concatenate([p[i] for p in parts]) for i in range(3))
        order = np.argsort(fps, kind="stable")[:self._k]
        return [(fps[order], sids[order], embeddings[order])]

    def add_input(self, acc, value):
        acc.append(value)
        return self._trim(acc) if sum(len(p[0]) for p in acc) > 2 * self._k else acc

    def merge_accumulators(self, accs):
        merged = [part for acc in accs for part in acc]
        return self._trim(merged) if sum(len(p[0]) for p in merged) > 2 * self._k else merged

    def extract_output(self, acc):
        return self._trim(acc)[0] if acc else None


def _code_counts(chunk: SidChunk, codebook_size: int) -> np.ndarray:
    return sid_quality.code_counts(chunk.sids, codebook_size)


class MergeCountsFn(beam.CombineFn):
    """Adds {key: count} dicts. Keyed by a hash bucket, so one worker holds one bucket's keys."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, counts):
        for key, count in counts.items():
            acc[key] = acc.get(key, 0) + count
        return acc

    def merge_accumulators(self, accs):
        accs = list(accs)
        return self.add_inputs(accs[0], accs[1:]) if accs else {}

    def add_inputs(self, acc, elements):
        for counts in elements:
            acc = self.add_input(acc, counts)
        return acc

    def extract_output(self, acc):
        return acc


def bucket_of(key: bytes, buckets: int) -> int:
    return int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big") % buckets


def bucketed_counts(keys, buckets: int):
    """Pre-aggregates keys of one chunk into (bucket, {key: count}): few elements per chunk."""
    per_bucket: dict[int, dict] = {}
    for key in keys:
        counts = per_bucket.setdefault(bucket_of(key if isinstance(key, bytes) else key.encode(), buckets), {})
        counts[key] = counts.get(key, 0) + 1
    return per_bucket.items()


def _prefix_counts(chunk: SidChunk, buckets: int):
    """((prefix length, bucket), (prefixes, items)) for the chunk's prefixes of every length.

    Vectorised: each length's distinct prefixes (fixed-width bytes, numpy void) and their counts come
    from one np.unique, and a prefix's bucket is a polynomial hash of its codes mod `buckets` (any fixed
    rule works: every worker buckets a prefix alike). Arrays, not dicts: a chunk's L x items prefixes
    cross the shuffle as raw bytes.
    """
    sids = np.ascontiguousarray(chunk.sids, dtype=np.int64)
    spread = np.zeros(len(sids), np.uint64)
    for n in range(1, sids.shape[1] + 1):
        spread = spread * np.uint64(0x9E3779B97F4A7C15) + sids[:, n - 1].astype(np.uint64)
        keys = np.ascontiguousarray(sids[:, :n]).view(np.dtype((np.void, 8 * n))).ravel()
        unique, first, counts = np.unique(keys, return_index=True, return_counts=True)
        bucket = (spread[first] % np.uint64(buckets)).astype(np.int64)
        order = np.argsort(bucket, kind="stable")
        bounds = np.flatnonzero(np.diff(bucket[order])) + 1
        for part in np.split(order, bounds):
            yield (n, int(bucket[part[0]])), (unique[part], counts[part].astype(np.int64))


class MergeKeyCountsFn(beam.CombineFn):
    """Adds (keys, counts) arrays: the count of each distinct key. The accumulator is a list of parts,
    merged (np.unique over the concatenation) only when it has doubled, so adding a part costs amortised
    O(part)."""

    def create_accumulator(self):
        return []

    @staticmethod
    def _merge(parts):
        keys = np.concatenate([k for k, _ in parts])
        unique, inverse = np.unique(keys, return_inverse=True)
        return [(unique, np.bincount(inverse.ravel(), np.concatenate([c for _, c in parts]),
                                     minlength=len(unique)).astype(np.int64))]

    def _maybe_merge(self, parts):
        total = sum(len(k) for k, _ in parts)
        return self._merge(parts) if len(parts) > 1 and total > 2 * len(parts[0][0]) else parts

    def add_input(self, acc, value):
        acc.append(value)
        return self._maybe_merge(acc)

    def merge_accumulators(self, accs):
        return self._maybe_merge([part for acc in accs for part in acc])

    def compact(self, acc):
        return self._merge(acc) if len(acc) > 1 else acc

    def extract_output(self, acc):
        return self._merge(acc)[0] if acc else (np.zeros(0, np.void), np.zeros(0, np.int64))


def _size_histogram(kv):
    """((n, bucket), (prefixes, items)) -> ((n, sub-trie size), number of prefixes) pairs."""
    (n, _), (_, counts) = kv
    sizes, prefixes = np.unique(counts, return_counts=True)
    return [((n, int(size)), int(count)) for size, count in zip(sizes, prefixes)]


# Sample candidates per sample item wanted: the k-th smallest id fingerprint of the whole corpus
# (valid or not) bounds the candidates, with room for rows the row rules reject.
SAMPLE_MARGIN = 1.25


class SmallestFingerprintsFn(beam.CombineFn):
    """The `n` smallest distinct id fingerprints over batches of ids -> the largest of them (the threshold).

    Every item of the final bottom-k sample has a fingerprint at most this, so only rows under it
    need to keep their embeddings after the model. No ids: the largest fingerprint (no limit).
    """

    def __init__(self, n: int):
        self._n = n

    def create_accumulator(self):
        return np.zeros(0, np.int64)

    def _keep(self, fps):
        fps = np.unique(fps)
        return fps[:self._n]

    def add_input(self, acc, item_ids):
        return self._keep(np.concatenate([acc, [sid_quality.fingerprint(i) for i in item_ids]]).astype(np.int64))

    def merge_accumulators(self, accs):
        return self._keep(np.concatenate(list(accs)))

    def extract_output(self, acc):
        return int(acc[-1]) if len(acc) == self._n else 2 ** 63 - 1


def local_sample(chunk: SidChunk, k: int, max_fingerprint: int = 2 ** 63 - 1):
    """The chunk's part of the bottom-k sample: (fingerprints, sids, embeddings) of its candidates.

    Candidates are the chunk's rows with fingerprints up to `max_fingerprint` (SmallestFingerprintsFn),
    at most its k smallest: every item of the global bottom k is among them, so the other rows'
    embeddings can leave the stream here.
    """
    if chunk.embeddings is None:
        return
    fps = np.array([sid_quality.fingerprint(i) for i in chunk.item_ids], dtype=np.int64)
    order = np.argsort(fps, kind="stable")[:k]
    order = order[fps[order] <= max_fingerprint]
    if order.size:
        yield fps[order], chunk.sids[order], chunk.embeddings[order]


def _finish(_, counts, size_counts, sample, allow_empty: bool = False):
    """Builds the report once every aggregate is in (called on a single element); with `allow_empty`, no SID
    gives a report of no items (an append that found nothing new)."""
    if (sample is None or not counts.any()) and allow_empty:
        return {"num_levels": counts.shape[0], "codebook_size": counts.shape[1], "items": 0}
    if sample is None or not counts.any():
        raise ValueError("no SIDs to report on: every row was rejected or the corpus is empty")
    histograms = [{size: c for (n, size), c in size_counts if n == level}
                  for level in range(1, counts.shape[0] + 1)]
    _, sids, embeddings = sample
    return sid_quality.finish_report(counts, histograms, sid_quality.prefix_similarity(sids, embeddings),
                                     len(sids))


@beam.ptransform_fn
def SidStatistics(chunks, samples, num_levels: int, codebook_size: int,
                  sample_size: int = sid_quality.DEFAULT_SAMPLE_SIZE, buckets: int = 64, allow_empty: bool = False):
    """SidChunks (embeddings not needed) and their `local_sample` parts -> one report dict.

    Codebook use and sub-trie sizes count every row; the prefix-similarity cosines use the
    bottom-k sample of item-id fingerprints among rows that carry an embedding. Prefix counts
    are combined per hash bucket: one worker holds about (items x L / buckets) prefixes.
    """
    counts = (chunks
              | "CodeCounts" >> beam.Map(_code_counts, codebook_size)
              | "SumCodeCounts" >> beam.CombineGlobally(SumArraysFn((num_levels, codebook_size))))
    size_counts = (
        chunks
        | "Prefixes" >> beam.FlatMap(_prefix_counts, buckets)
        | "ItemsPerPrefix" >> beam.CombinePerKey(MergeKeyCountsFn())
        | "SizesPerBucket" >> beam.FlatMap(_size_histogram)
        | "PrefixesPerSize" >> beam.CombinePerKey(sum)
        | "CollectSizes" >> beam.combiners.ToList())
    sample = samples | "BottomK" >> beam.CombineGlobally(BottomKFn(sample_size))
    return (
        chunks.pipeline
        | "One" >> beam.Create([None])
        | "Report" >> beam.Map(_finish, counts=beam.pvalue.AsSingleton(counts),
                               size_counts=beam.pvalue.AsSingleton(size_counts),
                               sample=beam.pvalue.AsSingleton(sample), allow_empty=allow_empty))
