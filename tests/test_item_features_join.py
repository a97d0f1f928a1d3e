"""The keyed (CoGroupByKey) item-feature join gives what the side-input join gives, alone and in the job."""

import glob
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs.item_features_join import JOINED_BY_KEY, JOINED_IN_MEMORY, ItemFeatureRows, JoinItemFeaturesByKey
from beam_jobs.transform import CheckLogRows
from pipeline.core import features as fk
from pipeline.core.layout import TransformLayout
from pipeline.core.records import Corpus, Impressions
from pipeline.core.representation import RepresentationConfig
from pipeline.data import corpus_io, log_io, sid_table_io
from worlds import run_transform


def _rows() -> Impressions:
    """Two valid impressions of day 3; item "x" has no SID, "d" is in the corpus twice."""
    return Impressions(
        user_id=np.array(["u1", "u2"], dtype=object), watch_item_id=np.array(["w", "x"], dtype=object),
        candidate_item_id=np.array(["c", "d"], dtype=object), history_values=np.array(["w", "c", "w"], dtype=object),
        history_lengths=np.array([1, 2]), click=np.array([1, 0]), engagement=np.array([0.5, 0.0], np.float32),
        day=np.full(2, 3))


def test_the_keyed_join_by_hand(tmp_path):
    """SIDs and first days come from the Parquet tables; a missing SID is all -1; duplicates follow the rule."""
    sid_dir = tmp_path / "sids"
    sid_dir.mkdir()
    table = sid_table_io.sid_parquet_table(np.array(["w", "c", "d"], dtype=object),
                                           np.array([[1, 2], [3, 4], [5, 6]]), "v0")
    import pyarrow.parquet as pq

    pq.write_table(table, str(sid_dir / "part-0.parquet"))
    corpus_path = str(tmp_path / "corpus.parquet")
    embeddings = np.eye(4, 2, dtype=np.float32) + 1
    # "d" twice: the duplicate-id rule keeps the earliest first_day (2), as the corpus reader does.
    corpus_io.write_corpus(corpus_path, Corpus(item_ids=np.array(["w", "c", "d", "d"], dtype=object),
                                               embeddings=embeddings, first_day=np.array([0, 3, 5, 2])))
    config = RepresentationConfig(kind="sid_ngram", ngram=1, num_levels=2, codebook_size=16, embedding_dim=2)
    with BeamTestPipeline() as p:
        valid = (p | beam.Create([(3, "day3.tfrecord.gz", 0, log_io.encode_examples(_rows()))])
                 | beam.ParDo(CheckLogRows(max_history=20)).with_outputs(CheckLogRows.REJECTED, main="valid")).valid
        items = p | ItemFeatureRows(str(sid_dir / "*.parquet"), corpus_path, config)
        joined = valid | JoinItemFeaturesByKey(items, config)
        assert_that(joined | beam.Map(lambda e: (e[0], e[1].column(fk.WATCH_SID).to_pylist(),
                                                 e[1].column(fk.CANDIDATE_SID).to_pylist(),
                                                 e[1].column(fk.HISTORY_SIDS).to_pylist(),
                                                 e[1].column(fk.CANDIDATE_FIRST_DAY).to_pylist())),
                    equal_to([(3, [[1, 2], [-1, -1]], [[3, 4], [5, 6]], [[1, 2], [3, 4, 1, 2]], [[3], [2]])]))


def _records_per_day(output: str) -> dict[int, list[bytes]]:
    layout = TransformLayout(output)
    days = {}
    for day_dir in sorted(glob.glob(os.path.join(layout.root, "transformed", "day=*"))):
        day = int(day_dir.rsplit("=", 1)[1])
        files = sorted(glob.glob(os.path.join(day_dir, "*")))
        days[day] = sorted(r.numpy() for r in tf.data.TFRecordDataset(files))
    return days


@pytest.mark.parametrize("kind, flags", [("sid_spm", {"vocab_size": 300}), ("dense", {})])
def test_the_keyed_join_transforms_every_day_to_the_same_bytes(run_dir, tmp_path, kind, flags):
    side = run_transform(run_dir, kind, **flags)
    keyed_layout = type(run_dir)(str(tmp_path))
    os.symlink(run_dir.data.root, keyed_layout.data.root)
    os.symlink(run_dir.sids, keyed_layout.sids)
    keyed = run_transform(keyed_layout, kind, shuffle_join_above=0, **flags)
    assert not keyed["reused"]  # a new output directory: the keyed job ran
    # Each path counts its own batches: the keyed run joined by key only, the default run in memory only
    # (a reused default output reports the counters its card recorded).
    assert keyed["counters"].get(JOINED_BY_KEY, 0) >= 3 and JOINED_IN_MEMORY not in keyed["counters"]
    assert side["counters"].get(JOINED_IN_MEMORY, 0) >= 3 and JOINED_BY_KEY not in side["counters"]
    a, b = _records_per_day(side["output"]), _records_per_day(keyed["output"])
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for day in a:
        assert len(a[day]) > 1000 and a[day] == b[day], f"day {day}: the joins disagree"

    def job_counters(counters):
        return {k: v for k, v in counters.items() if k not in (JOINED_BY_KEY, JOINED_IN_MEMORY)}
    assert job_counters(side["counters"]) == job_counters(keyed["counters"])
    assert job_counters(keyed["counters"])["rows_joined"] == 3 * 1500


def test_the_item_index_finds_exactly_the_known_ids():
    """Ids are found by a binary search of fixed-width bytes: an unknown id that extends a known one, one that
    differs from a known one by a trailing NUL, and one longer than every known id land on the defaults' row."""
    import pyarrow as pa

    from pipeline.sid.item_join import ItemIndex

    config = RepresentationConfig(kind="sid_ngram", ngram=1, num_levels=2, codebook_size=4)
    known = ["b", "a", "ab", "é", "z9"]
    index = ItemIndex(config, {i: np.array([n, n]) for n, i in enumerate(known)}, {})
    queries = ["a", "é", "abc", "a\0", "zzzzzzzz", "", "z9", "ab"]
    rows = index.rows(pa.array(queries))
    sids, missing = index.lookup("sid", rows)
    expected = [known.index(q) if q in known else None for q in queries]
    assert [None if s[0] < 0 else int(s[0]) for s in sids] == expected
    assert missing == expected.count(None) == 4
    assert (index.rows([]) == np.zeros(0)).all() and (ItemIndex(config, {}, {}).rows(["a"]) == [0]).all()
