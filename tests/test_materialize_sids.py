"""The Beam SID materialisation job against direct calls of the frozen SavedModel."""

import dataclasses
import glob
import json
import os
import shutil

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs import materialize_sids
from beam_jobs.sid_model_handler import Chunk, SidModelHandler
from models import rqvae_savedmodel
from pipeline.data import log_io
from pipeline.data import sid_table_io
from pipeline.stages import train_rqvae as rqvae_job
from pipeline.sid import sid_quality
from pipeline.core import features as fk
from pipeline.stages.simulate import to_corpus
from pipeline.data.simulator import SimulatorConfig, simulate
import worlds
from worlds import IN_MEMORY

DIM = 32
TINY = dataclasses.replace(worlds.TINY, num_levels=3, max_epochs=4)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A corpus with four bad rows, and an RQ-VAE trained on its good rows and exported."""
    root = tmp_path_factory.mktemp("materialize")
    corpus = to_corpus(simulate(SimulatorConfig(num_items=600, num_users=20, num_days=1,
                                                impressions_per_day=50, embedding_dim=DIM)))
    model, _ = rqvae_job.train(corpus.embeddings, TINY, lambda *_: None)
    export = rqvae_savedmodel.export(model, str(root / "export"))
    rows = {fk.ITEM_ID: list(corpus.item_ids), fk.EMBEDDING: [list(map(float, e)) for e in corpus.embeddings],
            fk.FIRST_DAY: [int(d) for d in corpus.first_day]}
    bad = [("nan-item", [float("nan")] * DIM, 0), ("short-item", [0.1] * (DIM - 3), 0), ("", [0.1] * DIM, 0),
           (corpus.item_ids[5], [0.5] * DIM, int(corpus.first_day[5]) + 1)]  # a later duplicate of item 5
    for item_id, embedding, day in bad:
        rows[fk.ITEM_ID].append(item_id)
        rows[fk.EMBEDDING].append(embedding)
        rows[fk.FIRST_DAY].append(day)
    path = str(root / "corpus.parquet")
    pq.write_table(pa.table(rows), path)
    return {"root": root, "corpus": corpus, "corpus_path": path, "export": export,
            "loaded": rqvae_savedmodel.LoadedRQVAE(export)}


def _run(world, output, *extra):
    return materialize_sids.main(["--corpus", world["corpus_path"], "--model", str(world["root"] / "export"),
                                 "--output", str(output), *extra])


def _table(output) -> dict:
    table = sid_table_io.read_sid_table(os.path.join(str(output), "table"))
    return {i: tuple(s) for i, s in zip(table.item_ids, table.sids)}


def _rejected(output) -> list[dict]:
    lines = []
    for path in glob.glob(os.path.join(str(output), "rejected", "*.jsonl")):
        with open(path) as f:
            lines += [json.loads(line) for line in f if line.strip()]
    return lines


@pytest.fixture(scope="module")
def default_run(world):
    output = world["root"] / "sids"
    return output, _run(world, output, *IN_MEMORY)


def test_beam_output_equals_the_savedmodel_on_every_item(world, default_run):
    output, summary = default_run
    corpus = world["corpus"]
    expected = world["loaded"](corpus.embeddings)["sid"]
    table = _table(output)
    assert set(table) == set(corpus.item_ids)  # every valid row materialised, once
    for item_id, sid in zip(corpus.item_ids, expected):
        assert table[item_id] == tuple(sid)
    assert summary["counters"]["rows_read"] == corpus.size + 4
    assert summary["counters"]["rows_materialised"] == corpus.size
    assert summary["counters"]["rows_rejected"] == 4
    assert sid_table_io.read_sid_table(os.path.join(str(output), "table")).rqvae_version == world["loaded"].version


def test_tfrecord_output_matches_the_parquet_table(world, default_run):
    output, _ = default_run
    files = glob.glob(os.path.join(str(output), "tfrecord", "*.tfrecord.gz"))
    spec = {fk.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
            fk.SID: tf.io.FixedLenFeature([TINY.num_levels], tf.int64),
            fk.RQVAE_VERSION: tf.io.FixedLenFeature([], tf.string)}
    got = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        ex = tf.io.parse_single_example(record, spec)
        got[ex[fk.ITEM_ID].numpy().decode()] = tuple(ex[fk.SID].numpy())
        assert ex[fk.RQVAE_VERSION].numpy().decode() == world["loaded"].version
    assert got == _table(output)


def test_each_bad_row_is_in_the_dead_letter_with_its_reason(default_run, world):
    output, _ = default_run
    reasons = {(r["record"][fk.ITEM_ID], r["field"]): r["reason"] for r in _rejected(output)}
    assert len(reasons) == 4
    assert "non-finite" in reasons[("nan-item", "embedding")]
    assert f"wrong dimension: {DIM - 3} values, expected {DIM}" in reasons[("short-item", "embedding")]
    assert "missing or empty item id" in reasons[("", "item_id")]
    duplicate = reasons[(world["corpus"].item_ids[5], "item_id")]
    assert "duplicate item id" in duplicate and "earliest first_day" in duplicate


def test_stats_equal_the_in_memory_report(world, default_run):
    output, summary = default_run
    corpus = world["corpus"]
    expected = sid_quality.report(world["loaded"](corpus.embeddings)["sid"], corpus.embeddings, corpus.item_ids,
                                  TINY.codebook_size)
    stats = dict(summary["stats"])
    assert stats.pop("rqvae_version") == world["loaded"].version and stats.pop("model")
    assert json.loads(json.dumps(stats)) == json.loads(json.dumps(expected))
    # A bounded sample gives the same numbers as the in-memory report with the same bound.
    bounded = _run(world, world["root"] / "bounded", "--sample_size", "100", *IN_MEMORY)["stats"]
    expected_bounded = sid_quality.report(world["loaded"](corpus.embeddings)["sid"], corpus.embeddings,
                                          corpus.item_ids, TINY.codebook_size, sample_size=100)
    assert bounded["prefix_similarity"] == expected_bounded["prefix_similarity"]
    assert bounded["prefix_similarity_sample"] == 100


def test_multi_processing_gives_the_same_table(world, default_run):
    output, _ = default_run
    parallel = world["root"] / "parallel"
    _run(world, parallel, "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert _table(parallel) == _table(output)


def test_rerun_is_idempotent_and_replaces_the_output(world, default_run):
    output, _ = default_run
    before = _table(output)
    _run(world, output, *IN_MEMORY)
    assert _table(output) == before
    assert not glob.glob(os.path.join(os.path.dirname(str(output)), ".staging-*"))


def test_incremental_mode_materialises_only_missing_items(world, default_run, tmp_path):
    output, _ = default_run
    corpus = world["corpus"]
    old_items = set(corpus.item_ids[:400])
    # An existing table that knows only the first 400 items.
    full = pq.read_table(glob.glob(os.path.join(str(output), "table", "*.parquet")))
    partial = full.filter(pa.compute.is_in(full.column(fk.ITEM_ID), pa.array(sorted(old_items))))
    existing = tmp_path / "existing"
    os.makedirs(existing / "table")
    pq.write_table(partial, str(existing / "table" / "part-00000-of-00001.parquet"))
    summary = _run(world, tmp_path / "incremental", "--existing_table", str(existing), *IN_MEMORY)
    assert summary["counters"]["rows_already_materialised"] == 400
    assert summary["counters"]["rows_materialised"] == corpus.size - 400
    assert _table(tmp_path / "incremental") == _table(output)


def test_append_mode_adds_only_the_missing_items_as_new_shards(world, default_run, tmp_path):
    """The daily step's mode: the 400 known items are dropped before the model, the table's shards stay byte for
    byte, the new items' SIDs arrive as new shards, and the table then equals a full run's; a rerun adds nothing."""
    output, _ = default_run
    corpus = world["corpus"]
    full = pq.read_table(glob.glob(os.path.join(str(output), "table", "*.parquet")))
    table = tmp_path / "sids"
    shutil.copytree(str(output), str(table))
    for path in glob.glob(str(table / "table" / "*")) + glob.glob(str(table / "tfrecord" / "*")):
        os.remove(path)
    known = full.filter(pa.compute.is_in(full.column(fk.ITEM_ID), pa.array(sorted(corpus.item_ids[:400]))))
    pq.write_table(known, str(table / "table" / "part-00000-of-00001.parquet"))
    before = {p: open(p, "rb").read() for p in glob.glob(str(table / "table" / "*"))}
    summary = _run(world, table, "--existing_table", str(table), "--append", "true", *IN_MEMORY)
    assert summary["counters"]["rows_already_materialised"] == 400
    assert summary["counters"]["rows_materialised"] == corpus.size - 400
    assert all(open(p, "rb").read() == data for p, data in before.items())
    assert _table(table) == _table(output)
    assert sorted(os.listdir(table / "appends")) and not glob.glob(str(tmp_path / ".append-*"))
    again = _run(world, table, "--existing_table", str(table), "--append", "true", *IN_MEMORY)
    assert again["counters"].get("rows_materialised", 0) == 0 and _table(table) == _table(output)
    with pytest.raises(ValueError, match="same directory as --output"):
        materialize_sids.MaterializeConfig(corpus=world["corpus_path"], model="m", output=str(tmp_path / "elsewhere"),
                                           existing_table=str(table), append=True)


def test_failed_run_leaves_no_partial_output(world, default_run, tmp_path):
    output, _ = default_run
    before = _table(output)
    # SIDs of another RQ-VAE version cannot be mixed in: the job fails...
    existing = tmp_path / "other_version"
    os.makedirs(existing / "table")
    pq.write_table(pa.table({fk.ITEM_ID: [world["corpus"].item_ids[0]], fk.SID: [[1, 2, 3]],
                             fk.RQVAE_VERSION: ["0-other"]}),
                   str(existing / "table" / "part-00000-of-00001.parquet"))
    with pytest.raises(Exception, match="re-materialise the whole corpus"):
        _run(world, output, "--existing_table", str(existing), *IN_MEMORY)
    # ...and the previous table is untouched, with no staging directory left behind.
    assert _table(output) == before
    assert not glob.glob(os.path.join(os.path.dirname(str(output)), ".staging-*"))


class _FakeSignature:
    def __call__(self, embedding):
        return {"sid": tf.constant((embedding.numpy()[:, :2] > 0).astype(np.int64))}


class _FakeModel:
    signatures = {"serving_default": _FakeSignature()}


def test_model_handler_with_a_fake_model():
    handler = SidModelHandler("unused")
    first = Chunk(np.array(["a", "b"], dtype=object), np.zeros(2, np.int64),
                  np.array([[1.0, -1.0, 2.0], [-1.0, 1.0, 0.0]], np.float32))
    second = Chunk(np.array(["c"], dtype=object), np.zeros(1, np.int64), np.array([[1.0, 1.0, 0.0]], np.float32))
    results = list(handler.run_inference([first, second], _FakeModel()))
    # One model call for both chunks; each chunk gets back its own rows.
    assert [r.inference.tolist() for r in results] == [[[1, 0], [0, 1]], [[1, 1]]]
    assert results[1].example is second
    assert handler.get_num_bytes([first, second]) == 36
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 2}


def test_tfrecord_corpus_gives_the_same_table(world, default_run, tmp_path):
    output, _ = default_run
    corpus = world["corpus"]
    records = [tf.train.Example(features=tf.train.Features(feature={
        fk.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[i.encode()])),
        fk.EMBEDDING: tf.train.Feature(float_list=tf.train.FloatList(value=e.tolist())),
        fk.FIRST_DAY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(d)])),
    })).SerializeToString() for i, e, d in zip(corpus.item_ids, corpus.embeddings, corpus.first_day)]
    path = str(tmp_path / "corpus.tfrecord.gz")
    log_io.write_tfrecord(path, records)
    materialize_sids.main(["--corpus", path, "--model", str(world["root"] / "export"),
                          "--output", str(tmp_path / "sids"), *IN_MEMORY])
    assert _table(tmp_path / "sids") == _table(output)


def test_validate_to_chunks_alone_keeps_valid_rows_and_rejects_the_rest():
    """The Validate step on its own (TestPipeline): the corpus row rules, one reject per bad row."""
    table = pa.table({fk.ITEM_ID: ["a", "b", "", "c"], fk.EMBEDDING: [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0]],
                      fk.FIRST_DAY: [0, 1, 0, 2]})
    with BeamTestPipeline() as p:
        out = (p | beam.Create([table])
               | beam.ParDo(materialize_sids.ValidateToChunks(2, 10, "corpus.parquet")).with_outputs(
                   materialize_sids.REJECTED, main="valid"))
        assert_that(out.valid | "ValidIds" >> beam.FlatMap(lambda chunk: chunk.item_ids.tolist()),
                    equal_to(["a", "b"]), label="valid")
        assert_that(out[materialize_sids.REJECTED] | beam.Map(lambda r: (r["field"], r["reason"])),
                    equal_to([(fk.ITEM_ID, "missing or empty item id"),
                              (fk.EMBEDDING, "wrong dimension: 1 values, expected 2")]), label="rejected")


def test_keep_one_per_id_alone_applies_the_duplicate_rule():
    """KeepOnePerId on grouped rows (TestPipeline): the earliest first_day is kept, the other rejected."""
    rows = [("a", (2, "00aa", np.ones(2, np.float32))), ("a", (0, "ffbb", np.zeros(2, np.float32))),
            ("b", (1, "0123", np.ones(2, np.float32)))]
    with BeamTestPipeline() as p:
        out = (p | beam.Create(rows) | beam.GroupByKey()
               | beam.FlatMap(materialize_sids.keep_one_per_id).with_outputs(materialize_sids.REJECTED, main="kept"))
        assert_that(out.kept | beam.Map(lambda kv: (kv[0], kv[1][0])), equal_to([("a", 0), ("b", 1)]), label="kept")
        assert_that(out[materialize_sids.REJECTED] | beam.Map(lambda r: (r["record"][fk.FIRST_DAY], r["reason"])),
                    equal_to([(2, "duplicate item id 'a': kept the row with first_day 0 and embedding digest ffbb "
                                  "(earliest first_day, then smallest embedding digest)")]), label="rejected")
