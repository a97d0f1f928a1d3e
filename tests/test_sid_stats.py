"""The counting combiners of the Beam jobs, on their own (TestPipeline)."""

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs.sid_stats import (MergeCountsFn, MergeKeyCountsFn, SidChunk, _prefix_counts, bucket_of,
                                 bucketed_counts)


def test_bucketed_counts_merge_to_exact_counts_per_key():
    chunks = [["a", "b", "a"], ["b", "c"], ["a"]]
    with BeamTestPipeline() as p:
        counts = (p | beam.Create(chunks)
                  | beam.FlatMap(lambda ids: bucketed_counts(ids, 4))
                  | beam.CombinePerKey(MergeCountsFn())
                  | beam.FlatMap(lambda kv: [(kv[0], key, n) for key, n in kv[1].items()]))
        assert_that(counts, equal_to([(bucket_of(k.encode(), 4), k, n) for k, n in (("a", 3), ("b", 2), ("c", 1))]))


def test_prefix_counts_merge_to_exact_items_per_prefix():
    """Prefix counts cross the shuffle as (keys, counts) arrays; merged in any grouping they give every
    prefix's exact number of items, the same as counting the SIDs at once."""
    rng = np.random.default_rng(0)
    sids = rng.integers(0, 3, size=(500, 3))
    chunks = [SidChunk(np.arange(i, i + 50).astype(str), sids[i:i + 50], None) for i in range(0, 500, 50)]
    with BeamTestPipeline() as p:
        counts = (p | beam.Create(chunks)
                  | beam.FlatMap(_prefix_counts, 4)
                  | beam.CombinePerKey(MergeKeyCountsFn())
                  | beam.FlatMap(lambda kv: [(kv[0][0], key.tobytes(), int(n)) for key, n in zip(*kv[1])]))
        expected = []
        for n in range(1, 4):
            keys, items = np.unique(np.ascontiguousarray(sids[:, :n]).view(np.dtype((np.void, 8 * n))).ravel(),
                                    return_counts=True)
            expected += [(n, k.tobytes(), int(c)) for k, c in zip(keys, items)]
        assert_that(counts, equal_to(expected))


def test_key_counts_accumulator_stays_merged_as_parts_arrive():
    fn = MergeKeyCountsFn()
    keys = np.arange(10, dtype=np.int64).view(np.dtype((np.void, 8)))
    acc = fn.create_accumulator()
    for _ in range(100):
        acc = fn.add_input(acc, (keys, np.ones(10, np.int64)))
    assert sum(len(k) for k, _ in acc) <= 40  # merged whenever it doubled, not 1,000 keys kept
    merged_keys, merged_counts = fn.extract_output(fn.merge_accumulators([acc, fn.compact(acc)]))
    assert list(merged_keys) == list(keys) and merged_counts.tolist() == [200] * 10
