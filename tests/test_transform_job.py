"""The Transform job end to end: SID join, SPM step, TF Transform per day, a self-contained output."""

import json
import os
import subprocess
import sys
import textwrap

import apache_beam as beam
import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf
import tensorflow_transform as tft
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.shared import Shared

from beam_jobs import transform

from beam_jobs.item_features_join import JoinItemFeatures
from pipeline.data import log_io
from pipeline.data import sid_table_io
from pipeline.stages import day_loop
from pipeline.sid import sid_text
from pipeline.sid.item_join import ItemIndex
from pipeline.core import features as fk
from pipeline.core.layout import TransformLayout
from pipeline.core.records import Impressions
from pipeline.core.representation import RepresentationConfig
from pipeline.sid.preprocessing import make_preprocessing_fn
from worlds import IN_MEMORY, run_transform


def _read_day(output, day, schema_dir):
    tft_output = tft.TFTransformOutput(schema_dir)
    files, compression = day_loop.transformed_day_files(output, day)
    spec = tft_output.transformed_feature_spec()
    return [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(files, compression_type=compression)]


def test_every_day_is_transformed_and_counted(run_dir, spm_run):
    output = spm_run["output"]
    assert spm_run["counters"]["rows_joined"] == 3 * 1500
    with open(os.path.join(output, "representation.json")) as f:
        card = json.load(f)
    # The protocol's default: the second half of the days is evaluated; the rest is the training window.
    assert card["train_days"] == [1] and card["eval_days"] == [2, 3] and card["eval_from"] == 2
    assert card["days"] == [1, 2, 3] and card["table_rows"] == 301
    for day in (1, 2, 3):
        assert len(_read_day(output, day, output)) == 1500


def test_spm_vocabulary_is_learned_from_impressed_sids_and_reaches_v(spm_run):
    processor = spm.SentencePieceProcessor(model_file=os.path.join(spm_run["output"], "spm", "sid_spm.model"))
    assert processor.get_piece_size() == 300
    with open(os.path.join(spm_run["output"], "lookups.json")) as f:
        lookups = json.load(f)
    assert lookups["representation"] == "sid_spm_300"
    assert lookups["head"]["mean_lookups_per_item"] <= lookups["tail"]["mean_lookups_per_item"]


def test_transformed_pieces_equal_the_library_on_the_joined_sids(run_dir, spm_run):
    """Every day-3 candidate's pieces, as a multiset, equal the library's encoding of its SID."""
    import collections

    output = spm_run["output"]
    table = sid_table_io.read_sid_table(os.path.join(run_dir.sids, "table")).lookup()
    processor = spm.SentencePieceProcessor(model_file=os.path.join(output, "spm", "sid_spm.model"))
    raw = log_io.read_logs(run_dir.data, days=[3])
    texts = sid_text.sid_text(np.stack([table[c] for c in raw.candidate_item_id]), 16)
    expected = collections.Counter(tuple(p) for p in processor.encode(texts))
    got = collections.Counter(tuple(row[fk.CANDIDATE_PIECES].values.numpy().tolist())
                              for row in _read_day(output, 3, output))
    assert got == expected and sum(got.values()) == 1500


def test_transform_output_loads_in_a_fresh_process(run_dir, spm_run, tmp_path):
    """The transform graph (SentencePiece model inside) is self-contained: same pieces elsewhere."""
    output = spm_run["output"]
    table = sid_table_io.read_sid_table(os.path.join(run_dir.sids, "table")).lookup()
    ids = list(table)[:3]
    raw = {fk.WATCH_ITEM_ID: ids[0], fk.CANDIDATE_ITEM_ID: ids[1], fk.HISTORY_ITEM_IDS: [ids[2], ids[0]],
           fk.CLICK: 1, fk.ENGAGEMENT: 0.25, fk.DAY: 3, fk.CANDIDATE_FIRST_DAY: 3, fk.USER_ID: "u1",
           fk.WATCH_SID: table[ids[0]].tolist(), fk.CANDIDATE_SID: table[ids[1]].tolist(),
           fk.HISTORY_SIDS: table[ids[2]].tolist() + table[ids[0]].tolist()}
    example = tf.train.Example()
    for key, value in raw.items():
        values = value if isinstance(value, list) else [value]
        if isinstance(values[0], str):
            example.features.feature[key].bytes_list.value.extend(v.encode() for v in values)
        elif isinstance(values[0], float):
            example.features.feature[key].float_list.value.extend(values)
        else:
            example.features.feature[key].int64_list.value.extend(values)
    path = tmp_path / "example.pb"
    path.write_bytes(example.SerializeToString())
    script = textwrap.dedent(f"""
        import json, os
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tensorflow as tf
        import tensorflow_text  # registers the SentencePiece ops
        import tensorflow_transform as tft
        out = tft.TFTransformOutput({output!r})
        parsed = tf.io.parse_example([open({str(path)!r}, "rb").read()], out.raw_feature_spec())
        result = out.transform_raw_features(parsed)
        print(json.dumps({{k: tf.sparse.to_dense(v).numpy().tolist() if isinstance(v, tf.SparseTensor)
                          else v.numpy().tolist() for k, v in result.items()}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    processor = spm.SentencePieceProcessor(model_file=os.path.join(output, "spm", "sid_spm.model"))
    encode = lambda item: processor.encode(sid_text.sid_text(np.array([table[item]]), 16)[0])  # noqa: E731
    assert fresh[fk.WATCH_PIECES][0] == encode(ids[0])
    assert fresh[fk.CANDIDATE_PIECES][0] == encode(ids[1])
    assert fresh[fk.HISTORY_PIECES][0] == encode(ids[2]) + encode(ids[0])
    assert fresh[fk.COLD_START] == [1] and fresh[fk.HISTORY_LENGTH] == [2]


def test_items_without_a_sid_get_the_oov_row_and_are_counted(run_dir, tmp_path):
    # A SID table that lacks one item: every impression that mentions it falls back.
    table = sid_table_io.read_sid_table(os.path.join(run_dir.sids, "table"))
    dropped = log_io.read_logs(run_dir.data, days=[1]).candidate_item_id[0]
    keep = table.item_ids != dropped
    partial = tmp_path / "sids"
    os.makedirs(partial / "table")
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({fk.ITEM_ID: list(table.item_ids[keep]), fk.SID: [s.tolist() for s in table.sids[keep]],
                             fk.RQVAE_VERSION: [table.rqvae_version] * int(keep.sum())}),
                   str(partial / "table" / "part-00000-of-00001.parquet"))
    with open(os.path.join(run_dir.sids, "stats.json")) as f, open(partial / "stats.json", "w") as g:
        g.write(f.read())
    out = transform.main(["--data_dir", run_dir.data.root, "--sids", str(partial), "--output", str(tmp_path / "t"),
                         "--kind", "sid_ngram", "--ngram", "2", *IN_MEMORY])
    # Counted per occurrence, exactly: every day's rows naming the item, per role.
    logs = log_io.read_logs(run_dir.data)
    expected = {"candidate_without_sid": int((logs.candidate_item_id == dropped).sum()),
                "watch_without_sid": int((logs.watch_item_id == dropped).sum()),
                "history_without_sid": int((logs.history_values == dropped).sum())}
    assert expected["candidate_without_sid"] >= 1
    assert {key: out["counters"].get(key, 0) for key in expected} == expected
    # Day 1's rows with that candidate, and only those, have both bigram pieces on the OOV row.
    oov = out["config"].oov_piece
    rows = _read_day(str(tmp_path / "t"), 1, str(tmp_path / "t"))
    day1 = log_io.read_logs(run_dir.data, days=[1])
    assert len(rows) == day1.size
    assert sum(r[fk.CANDIDATE_PIECES].values.numpy().tolist() == [oov, oov] for r in rows) == \
        int((day1.candidate_item_id == dropped).sum())
    assert all(oov not in r[fk.CANDIDATE_PIECES].values.numpy() for r in rows
               if r[fk.CANDIDATE_PIECES].values.numpy().tolist() != [oov, oov])


def test_rows_breaking_the_log_rules_are_written_aside_counted_and_never_transformed(run_dir, tmp_path):
    """One bad row of each kind in day 2: exactly those rows rejected, counted, and written aside."""
    from worlds import bad_log_rows, copy_world

    world = copy_world(run_dir, str(tmp_path / "world"))
    with_bad_rows, expected = bad_log_rows(2)
    good = log_io.read_logs(world.data, days=[2])
    path = log_io.write_day(world.data, 2, with_bad_rows(good))
    out = run_transform(world, "sid_ngram", ngram=2)
    counters = out["counters"]
    assert counters["rows_rejected"] == 4 and counters["rows_read"] == 3 * 1500 + 4
    assert counters["rows_joined"] == 3 * 1500
    for field, _ in expected:
        assert counters[f"rejected_{field}"] == 1, field
    [rejected_file] = tf.io.gfile.glob(os.path.join(TransformLayout(out["output"]).rejected, "*.jsonl"))
    with open(rejected_file) as f:
        lines = [json.loads(line) for line in f]
    assert [(r["source"], r["row"], r["field"]) for r in lines] == [
        (path, good.size + i, field) for i, (field, _) in enumerate(expected)]
    for line, (_, words) in zip(lines, expected):
        assert words in line["reason"] and line["record"]["serialized_example_base64"]
    # Day 2's transformed examples are exactly its valid rows: none of the bad ones reached training.
    day2 = _read_day(out["output"], 2, out["output"])
    assert len(day2) == good.size
    assert {int(r[fk.CLICK]) for r in day2} <= {0, 1}
    # `sidrec validate` rejects the same rows for the same fields: one implementation of the rules.
    rejects = tmp_path / "validate.jsonl"
    log_io.read_logs(world.data, days=[2], rejects_path=str(rejects))
    validated = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["row"], r["field"], r["reason"]) for r in validated] == [(r["row"], r["field"], r["reason"])
                                                                       for r in lines]


def _four_rows() -> Impressions:
    """Four impressions of day 3 (row 2 clicks 2: it breaks the log contract)."""
    return Impressions(
        user_id=np.array(["u1", "u1", "u2", "u2"], dtype=object), watch_item_id=np.array(["w"] * 4, dtype=object),
        candidate_item_id=np.array(["c", "d", "c", "c"], dtype=object),
        history_values=np.array(["w", "c", "w"], dtype=object), history_lengths=np.array([1, 0, 0, 2]),
        click=np.array([1, 0, 2, 0]), engagement=np.array([0.5, 0.0, 0.0, 0.0], np.float32), day=np.full(4, 3))


class _Tables:
    """Item tables given by hand, in the loader form JoinItemFeatures takes."""

    def __init__(self, tables: ItemIndex):
        self._tables = tables

    def __call__(self) -> ItemIndex:
        return self._tables

    def tag(self) -> str:
        return "by hand"


def test_check_log_rows_and_join_item_features_alone():
    """The row-rule and join steps on their own (TestPipeline): rows named by file and number; SIDs joined."""
    records = log_io.encode_examples(_four_rows())
    config = RepresentationConfig(kind="sid_ngram", ngram=1, num_levels=2, codebook_size=16)
    sids = {"w": np.array([1, 2]), "c": np.array([3, 4])}
    with BeamTestPipeline() as p:
        checked = (p | beam.Create([(3, "day3.tfrecord.gz", 10, records)])
                   | beam.ParDo(transform.CheckLogRows(max_history=20)).with_outputs(
                       transform.CheckLogRows.REJECTED, main="valid"))
        rejected = checked[transform.CheckLogRows.REJECTED] | beam.Map(json.loads)
        assert_that(rejected | beam.Map(lambda r: (r["source"], r["row"], r["field"])),
                    equal_to([("day3.tfrecord.gz", 12, fk.CLICK)]), label="rejected")
        tables = _Tables(ItemIndex(config, sids, {}, {"c": 3, "d": 1}))
        joined = checked.valid | beam.ParDo(JoinItemFeatures(config, tables, Shared()))
        assert_that(joined | beam.Map(lambda batch: (batch.column(fk.CANDIDATE_SID).to_pylist(),
                                                     batch.column(fk.HISTORY_SIDS).to_pylist(),
                                                     batch.column(fk.CANDIDATE_FIRST_DAY).to_pylist())),
                    equal_to([([[3, 4], [-1, -1], [3, 4]], [[1, 2], [], [3, 4, 1, 2]], [[3], [1], [3]])]),
                    label="joined")


@pytest.mark.parametrize("kind", ["random_hash", "dense", "sid_ngram", "sid_prefix"])
def test_no_representation_has_tft_analyzers_so_the_analysis_reads_no_rows(kind):
    """The job analyses a graph without analyzers on no rows; one with an analyzer is seen as such."""
    config = RepresentationConfig(kind=kind, num_levels=2, codebook_size=16)
    adapter = transform.tensor_adapter_config(config)
    assert not transform.has_analyzers(make_preprocessing_fn(config), adapter)

    def with_an_analyzer(inputs):
        return {"z": tft.scale_to_z_score(tf.cast(inputs[fk.CLICK], tf.float32))}

    assert transform.has_analyzers(with_an_analyzer, adapter)


def test_impressions_are_counted_over_every_training_day(run_dir, tmp_path):
    """Impressions per candidate over several training days: counted day by day, then merged (the branch
    pipeline 2 adds for kinds without SPM, and pipeline 1 runs for sid_spm)."""
    import collections

    from beam_jobs.options import pipeline_options

    from pipeline.core.cards import read_item_impressions
    from pipeline.core.layout import TransformLayout

    days = [1, 2, 3]
    with beam.Pipeline(options=pipeline_options(IN_MEMORY)) as p:
        valid = {d: (p | f"ReadDay{d}" >> transform.ReadCheckedLogs(run_dir.data, d, fk.DEFAULT_MAX_HISTORY)).valid
                 for d in days}
        transform.count_impressions(p, valid, days, TransformLayout(str(tmp_path)).item_impressions)
    counts = read_item_impressions(str(tmp_path))
    expected = collections.Counter(log_io.read_logs(run_dir.data, days=days).candidate_item_id.tolist())
    assert counts == dict(expected) and sum(counts.values()) == 3 * 1500
