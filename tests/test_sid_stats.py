"""The counting combiners of the Beam jobs, on their own (TestPipeline)."""

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs.sid_stats import MergeCountsFn, bucket_of, bucketed_counts


def test_bucketed_counts_merge_to_exact_counts_per_key():
    chunks = [["a", "b", "a"], ["b", "c"], ["a"]]
    with BeamTestPipeline() as p:
        counts = (p | beam.Create(chunks)
                  | beam.FlatMap(lambda ids: bucketed_counts(ids, 4))
                  | beam.CombinePerKey(MergeCountsFn())
                  | beam.FlatMap(lambda kv: [(kv[0], key, n) for key, n in kv[1].items()]))
        assert_that(counts, equal_to([(bucket_of(k.encode(), 4), k, n) for k, n in (("a", 3), ("b", 2), ("c", 1))]))
