"""SID statistics with Beam combiners; the same aggregates as `pipeline.sid_quality.report`."""

import apache_beam as beam
import numpy as np

from pipeline import sid_quality


class CodeCountsFn(beam.CombineFn):
    """Items per code, per level: int64 [L, K]."""

    def __init__(self, num_levels: int, codebook_size: int):
        self._shape = (num_levels, codebook_size)

    def create_accumulator(self):
        return np.zeros(self._shape, np.int64)

    def add_input(self, acc, sid):
        acc[np.arange(self._shape[0]), sid] += 1
        return acc

    def merge_accumulators(self, accs):
        return sum(accs, self.create_accumulator())

    def extract_output(self, acc):
        return acc


def _prefixes(sid):
    return [((n, tuple(int(c) for c in sid[:n])), 1) for n in range(1, len(sid) + 1)]


def _finish(_, counts, size_counts, sample, sample_size):
    """Builds the report once every aggregate is in (called on a single element)."""
    if not sample:
        raise ValueError("no SIDs to report on: every row was rejected or the corpus is empty")
    levels = counts.shape[0]
    histograms = [{size: c for (n, size), c in size_counts if n == level} for level in range(1, levels + 1)]
    sids = np.stack([s for _, s, _ in sample])
    embeddings = np.stack([e for _, _, e in sample])
    return sid_quality.finish_report(counts, histograms, sid_quality.prefix_similarity(sids, embeddings),
                                     len(sample))


@beam.ptransform_fn
def SidStatistics(sid_rows, num_levels: int, codebook_size: int,
                  sample_size: int = sid_quality.DEFAULT_SAMPLE_SIZE):
    """(item_id, sid int64[L], embedding float32[D] or None) -> one report dict.

    Codebook use and sub-trie sizes count every row; the prefix-similarity cosines use the
    bottom-k sample of item-id fingerprints among rows that carry an embedding.
    """
    sids = sid_rows | "Sids" >> beam.Map(lambda r: r[1])
    counts = sids | "CodeCounts" >> beam.CombineGlobally(CodeCountsFn(num_levels, codebook_size))
    size_counts = (
        sids
        | "Prefixes" >> beam.FlatMap(_prefixes)
        | "ItemsPerPrefix" >> beam.CombinePerKey(sum)
        | "ByLengthAndSize" >> beam.Map(lambda kv: ((kv[0][0], kv[1]), 1))
        | "PrefixesPerSize" >> beam.CombinePerKey(sum)
        | "CollectSizes" >> beam.combiners.ToList())
    sample = (
        sid_rows
        | "WithEmbedding" >> beam.Filter(lambda r: r[2] is not None)
        | "Fingerprint" >> beam.Map(lambda r: (sid_quality.fingerprint(r[0]), r[1], r[2]))
        | "BottomK" >> beam.combiners.Top.Smallest(sample_size, key=lambda t: t[0]))
    return (
        sid_rows.pipeline
        | "One" >> beam.Create([None])
        | "Report" >> beam.Map(_finish, counts=beam.pvalue.AsSingleton(counts),
                               size_counts=beam.pvalue.AsSingleton(size_counts),
                               sample=beam.pvalue.AsSingleton(sample), sample_size=sample_size))
