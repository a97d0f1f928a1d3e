"""`sidrec daily` on a 4-day world: the first step publishes version 1 the day the lineage is fitted, a daily
day equals the batch day, touches only its own files, blesses before it publishes, never lets serving go back,
and a step stopped midway ends as an uninterrupted one."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from beam_jobs import transform
from pipeline import cli
from pipeline.core import features as fk
from pipeline.core.cards import read_serving_sample
from pipeline.core.layout import ExportLayout, RankerLayout, RunLayout, SidTableLayout, TransformLayout
from pipeline.core.publish import list_versions, publish_version
from pipeline.data import corpus_io, log_io, sid_table_io
from pipeline.stages import bless, daily, day_loop
from doc_blocks import free_port
from worlds import IN_MEMORY, SMALL_WORLD, copy_world, small_run

FOUR_DAYS = dataclasses.replace(SMALL_WORLD, num_days=4)
REPRESENTATION = "sid_spm_300"
CONFIG = day_loop.TrainConfig(batch_size=256, hidden_dims=(16,), embedding_dim=8, holdout_per_mille=200)
# A lineage whose updates blow the weights up (another config: another run directory).
DIVERGED = dataclasses.replace(CONFIG, learning_rate=1e4, table_learning_rate=1e4)
# This small world's ranker is barely better than the base rate (AUC about 0.55) and its calibration on ~300
# held-out rows swings between 0.75 and 1.15: the lineage tests check publication, so the quality rules are wide.
CHECKS = bless.BlessConfig(max_auc_drop=0.005, min_auc=0.0, min_calibration=0.5, max_calibration=2.0,
                           max_ne_increase=0.05)
STEP = daily.DailyConfig(representation=REPRESENTATION)


def _transform(layout: RunLayout, output: str) -> str:
    return transform.run(transform.TransformConfig(data_dir=layout.data.root, sids=layout.sids, output=output,
                                                   kind="sid_spm", vocab_size=300, eval_from=2), IN_MEMORY)["output"]


def _run_dir(layout: RunLayout, config: day_loop.TrainConfig) -> str:
    return os.path.join(layout.ranker, day_loop.run_dir_name(REPRESENTATION, config))


def _keep_sids_of_items_seen_by(layout: RunLayout, day: int) -> int:
    """Rewrites the SID table without the items first seen after `day` (they arrive later); returns how many."""
    table = sid_table_io.read_sid_table(SidTableLayout(layout.sids).table)
    corpus = corpus_io.read_corpus(layout.data.corpus)
    first_day = dict(zip(corpus.item_ids, corpus.first_day))
    keep = np.array([first_day[i] <= day for i in table.item_ids])
    shutil.rmtree(SidTableLayout(layout.sids).table)
    os.makedirs(SidTableLayout(layout.sids).table)
    pq.write_table(pa.table({fk.ITEM_ID: list(table.item_ids[keep]), fk.SID: [s.tolist() for s in table.sids[keep]],
                             fk.RQVAE_VERSION: [table.rqvae_version] * int(keep.sum())}),
                   os.path.join(SidTableLayout(layout.sids).table, "part-00000-of-00001.parquet"))
    return int((~keep).sum())


def _files(root: str) -> dict[str, float]:
    return {os.path.join(d, f): os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs}


def _scores(export_dir: str, records: list[bytes]) -> np.ndarray:
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    return serve(examples=tf.constant(records))[fk.CLICK_PROBABILITY].numpy()


def _served(layout: RunLayout) -> list[tuple[int, int]]:
    """(version, trained through day) of every version in the serving directory."""
    base = layout.serving(STEP.model_name)
    out = []
    for version in list_versions(base):
        with open(ExportLayout(os.path.join(base, str(version))).publication) as f:
            out.append((version, json.load(f)["trained_through_day"]))
    return out


def _log_day(layout: RunLayout, later: str, day: int) -> None:
    """The logs of `day` land (moved back from where the fixture kept them)."""
    shutil.move(os.path.join(later, f"day={day:04d}"), layout.data.day_dir(day))


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """The full 4-day world (the batch path), and a copy that has logged days 1-2 only, with SIDs for the items
    seen by then and a transform fitted on them (T = 1): a lineage fitted, nothing trained or served yet."""
    root = tmp_path_factory.mktemp("daily")
    full = small_run(str(root / "full"), FOUR_DAYS)
    layout = copy_world(full, str(root / "daily"))
    later = str(root / "later")
    os.makedirs(later)
    for day in (3, 4):
        shutil.move(layout.data.day_dir(day), os.path.join(later, f"day={day:04d}"))
    missing = _keep_sids_of_items_seen_by(layout, 2)
    _transform(layout, layout.transform_output(REPRESENTATION))
    return {"full": full, "daily": layout, "later": later, "missing_sids": missing, "root": root}


@pytest.fixture(scope="module")
def days(worlds):
    """Lineage A's first step (day 2, the day it was fitted through), a step with nothing to take, then day 3 by
    lineage A; then day 4 by the diverged lineage B (catching up from day 1), then by A; what each step recorded
    and what the serving directory held after it. A copy of the world before day 4 is kept."""
    layout, out = worlds["daily"], {}
    transformed = TransformLayout(layout.transform_output(REPRESENTATION)).root
    out["first_lines"] = []
    out["first"] = daily.run(layout, STEP, CONFIG, CHECKS, IN_MEMORY, log=out["first_lines"].append)
    out["served_first"] = _served(layout)
    out["nothing_lines"] = []
    out["nothing"] = daily.run(layout, STEP, CONFIG, CHECKS, IN_MEMORY, log=out["nothing_lines"].append)
    out["before"] = {**_files(os.path.join(transformed, "transformed")), **_files(layout.data.logs)}
    _log_day(layout, worlds["later"], 3)
    out["day3"] = daily.run(layout, STEP, CONFIG, CHECKS, IN_MEMORY, log=lambda *_: None)
    out["after3"] = {**_files(os.path.join(transformed, "transformed")), **_files(layout.data.logs)}
    out["served3"] = _served(layout)
    _log_day(layout, worlds["later"], 4)
    out["before4"] = str(worlds["root"] / "before4")
    shutil.copytree(layout.root, out["before4"], symlinks=True)
    # Lineage B catches up, then lineage A takes day 4. (A server watching a serving directory while days
    # are taken: tests/test_docs_operating.py, from the shell.)
    out["diverged4"] = daily.run(layout, STEP, DIVERGED, CHECKS, IN_MEMORY, log=lambda *_: None)
    out["served_diverged"] = _served(layout)
    lines = []
    out["day4"] = daily.run(layout, STEP, CONFIG, CHECKS, IN_MEMORY, log=lines.append)
    out["lines4"], out["served4"] = lines, _served(layout)
    return out


def test_a_daily_day_equals_the_same_day_of_the_batch_path(worlds, days):
    """Days 1-4 in one `sidrec transform` and `sidrec train` against days 1-2 then two daily steps: the same
    transformed bytes for days 3 and 4, the same metrics and the same export scores (training is seeded and
    resumes from the checkpoint exactly; float sums may differ in the last bit: 1e-6)."""
    full, layout = worlds["full"], worlds["daily"]
    batch_transform = _transform(full, str(worlds["root"] / "batch_transform"))
    batch = {e["evaluated_on_day"]: e for e in day_loop.train(batch_transform, str(worlds["root"] / "batch_run"),
                                                               CONFIG, log=lambda *_: None, export_every_day=False,
                                                               export_days=(3, 4))}
    daily_transform = layout.transform_output(REPRESENTATION)
    sample = read_serving_sample(batch_transform)
    for day, [record] in ((3, days["day3"]), (4, days["day4"])):
        assert _records(daily_transform, day) == _records(batch_transform, day), day
        for key in ("ctr_auc", "ctr_1d_auc", "engagement_rmse"):
            assert record["metrics"][key] == pytest.approx(batch[day][key], abs=1e-6), (day, key)
        np.testing.assert_allclose(_scores(record["candidate"], sample),
                                   _scores(os.path.join(str(worlds["root"] / "batch_run"), "export", str(day)), sample),
                                   atol=1e-6)
    # The items first seen on days 3 and 4 got their SIDs from the frozen RQ-VAE on the way.
    assert days["day3"][0]["new_items"] + days["day4"][0]["new_items"] == worlds["missing_sids"] > 0
    full_table = sid_table_io.read_sid_table(SidTableLayout(full.sids).table).lookup()
    grown = sid_table_io.read_sid_table(SidTableLayout(layout.sids).table).lookup()
    assert grown.keys() == full_table.keys() and all((grown[i] == full_table[i]).all() for i in grown)


def _records(transform_dir: str, day: int) -> list[bytes]:
    files, compression = day_loop.transformed_day_files(transform_dir, day)
    return sorted(r.numpy() for r in tf.data.TFRecordDataset(files, compression_type=compression))


def test_a_daily_step_touches_only_its_own_day(days):
    before, after = days["before"], days["after3"]
    assert {path: after[path] for path in before} == before  # nothing earlier rewritten (or removed)
    added = sorted(os.path.relpath(p, os.path.commonpath(list(after))) for p in set(after) - set(before))
    assert added and all("day=0003" in path for path in added), added


def test_the_first_step_after_the_lineage_is_fitted_publishes_version_1(days):
    """Serving starts the day the lineage is fitted: the first step trains through the fitted days (evaluating
    day 2, the evaluation day, before fitting on it), is blessed on held-out rows with nothing served, and
    publishes version 1."""
    [first] = days["first"]
    assert first["day"] == 2 and first["trained_days"] == [1, 2] and first["published"] == 1
    assert first["blessing"]["blessed"] and first["blessing"]["served"] is None
    assert first["blessing"]["held_out_rows"] > 0 and days["served_first"] == [(1, 2)]
    [line] = days["first_lines"]
    assert line.startswith("day 2 (first step of the lineage: trained on days 1-2): CTR AUC "), line
    assert "published version 1" in line


def test_blessing_reads_the_held_out_rows_the_beam_jobs_wrote(worlds, days):
    """The rows a candidate is blessed on come from the Beam job that read the day (day 3: the daily transform;
    day 2, the fitted-through day: a job of their own), and are exactly the held-out users' logged rows."""
    from beam_jobs import held_out_rows

    layout = worlds["daily"]
    out = TransformLayout(layout.transform_output(REPRESENTATION))
    for day, [record] in ((2, days["first"]), (3, days["day3"])):
        written = held_out_rows.read(out.held_out_day(CONFIG.holdout_per_mille, day), day)
        expected = bless.held_out_rows(log_io.read_logs(layout.data, days=[day]), day, CONFIG.holdout_per_mille)
        key = lambda rows: sorted(zip(rows.user_id, rows.candidate_item_id, rows.click))  # noqa: E731
        assert written.size == expected.size == record["blessing"]["held_out_rows"] > 0
        assert key(written) == key(expected)
        assert sorted(written.history_values) == sorted(expected.history_values)


def test_a_step_with_nothing_to_take_says_what_is_served_and_what_comes_next(worlds, days):
    assert days["nothing"] == []
    [line] = days["nothing_lines"]
    layout = worlds["daily"]
    assert line == (f"nothing to take: the run has taken days 1-2; {layout.serving('ranker')} serves version 1 "
                    f"(trained through day 2); the next step takes day 3 once its logs are in "
                    f"{layout.data.day_dir(3)}")


def test_a_blessed_candidate_is_published_and_a_diverged_one_is_not(days):
    [day3] = days["day3"]
    assert day3["blessing"]["blessed"] and day3["published"] == 2 and days["served3"] == [(1, 2), (2, 3)]
    assert day3["blessing"]["held_out_rows"] > 0
    assert day3["blessing"]["served"].endswith(os.path.join("serving", "ranker", "1"))
    # Lineage B has its own records: its first step (day 2) and day 3 are behind the served version, day 4
    # diverged.
    assert [r["day"] for r in days["diverged4"]] == [2, 3, 4]
    assert all(r["published"] is None for r in days["diverged4"])
    diverged = days["diverged4"][-1]
    assert not diverged["blessing"]["blessed"], diverged["blessing"]
    assert any("the same score" in reason or "not finite" in reason for reason in diverged["blessing"]["reasons"])
    assert diverged["blessing"]["reasons"] and os.path.isdir(diverged["candidate"])  # kept for inspection
    assert days["served_diverged"] == [(1, 2), (2, 3)]  # the served version stays
    [day4] = days["day4"]
    assert day4["blessing"]["blessed"] and day4["blessing"]["served"].endswith(os.path.join("serving", "ranker", "2"))
    assert days["served4"] == [(1, 2), (2, 3), (3, 4)]
    [line] = days["lines4"]
    assert line.startswith("day 4: CTR AUC ") and "blessed (held-out AUC" in line and "published version 3" in line


def test_nothing_is_pending_after_a_step_and_a_changed_history_is_refused(worlds, days):
    layout = worlds["daily"]
    assert daily.run(layout, STEP, CONFIG, CHECKS, IN_MEMORY, log=lambda *_: None) == []
    copy = RunLayout(str(worlds["root"] / "changed"))
    shutil.copytree(layout.root, copy.root, symlinks=True)
    with open(os.path.join(copy.data.day_dir(2), os.listdir(copy.data.day_dir(2))[0]), "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match=r"logs of day\(s\) 2 changed"):
        daily.run(copy, STEP, CONFIG, CHECKS, IN_MEMORY, log=lambda *_: None)


def test_a_rebuilt_lineage_is_not_published_until_it_is_ahead_of_the_served_one(worlds, days):
    """Lineage B caught up from day 1 in one step: what it could publish was trained through day 4 at most, and
    it was not blessed; a lineage never publishes a model trained through fewer days than the served one."""
    layout = worlds["daily"]
    anything_finite = bless.BlessConfig(max_auc_drop=1.0, min_auc=0.0, min_calibration=1e-6, max_calibration=1e6,
                                        max_ne_increase=1e6)
    lineage = day_loop.run_fingerprint(day_loop.read_protocol_card(layout.transform_output(REPRESENTATION)),
                                       CONFIG).value
    record = daily._bless_and_publish(layout, _run_dir(layout, CONFIG), lineage, 3, days["day3"][0]["metrics"],
                                      layout.serving("ranker"), STEP, CONFIG, anything_finite)
    assert record["blessing"]["blessed"] and record["published"] is None
    assert "trained through day 4: serving never goes back" in record["not_published"]
    assert _served(layout) == [(1, 2), (2, 3), (3, 4)]


class _Stop(Exception):
    """Stands for a kill: raised where the step would die, after what it committed so far."""


@pytest.mark.parametrize("where", ["train", "publish"])
def test_a_step_stopped_midway_and_run_again_ends_as_an_uninterrupted_one(days, tmp_path, monkeypatch, where):
    layout = RunLayout(str(tmp_path / "world"))
    shutil.copytree(days["before4"], layout.root, symlinks=True)
    # Stopped after the day was transformed (before training), or after publishing (before the record).
    target = (day_loop, "train") if where == "train" else (daily, "publish_version")
    original = getattr(*target)

    def stop(*args, **kwargs):
        result = original(*args, **kwargs) if where == "publish" else None
        raise _Stop(where)

    monkeypatch.setattr(*target, stop)
    with pytest.raises(_Stop):
        daily.run(layout, STEP, CONFIG, CHECKS, IN_MEMORY, log=lambda *_: None)
    monkeypatch.setattr(*target, original)
    [record] = daily.run(layout, STEP, CONFIG, CHECKS, IN_MEMORY, log=lambda *_: None)
    [uninterrupted] = days["day4"]
    assert record["metrics"] == pytest.approx(uninterrupted["metrics"], abs=1e-6)
    assert record["published"] == uninterrupted["published"] == 3
    assert _served(layout) == [(1, 2), (2, 3), (3, 4)]  # published once
    card = day_loop.read_protocol_card(layout.transform_output(REPRESENTATION))
    assert card["days"] == [1, 2, 3, 4]


def test_two_workers_take_a_day_as_the_default_strategy_does_and_only_the_chief_writes(days, tmp_path):
    """`sidrec daily --strategy multi_worker` from the shell, two workers on localhost: the chief transforms,
    blesses and publishes; the other waits for its transform and trains beside it (each on half of every global
    batch): day 4's metrics are the in-process default strategy's up to the order of float sums."""
    layout = RunLayout(str(tmp_path / "world"))
    shutil.copytree(days["before4"], layout.root, symlinks=True)
    argv = [os.path.join(os.path.dirname(sys.executable), "sidrec"), "daily", "--run_dir", layout.root,
            "--representation", REPRESENTATION, "--batch_size", "256", "--hidden_dims", "16", "--embedding_dim", "8",
            "--holdout_per_mille", "200", "--max_auc_drop", "0.005", "--min_auc", "0", "--strategy", "multi_worker",
            *IN_MEMORY]
    cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(2)]}
    workers = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                                             "task": {"type": "worker", "index": i}})})
               for i in range(2)]
    (chief_out, chief_err), (other_out, other_err) = (w.communicate(timeout=600) for w in workers)
    assert [w.returncode for w in workers] == [0, 0], chief_err[-2000:] + other_err[-2000:]
    assert chief_out.startswith("day 4: CTR AUC ") and "published version 3" in chief_out, chief_out
    assert other_out == ""
    with open(RankerLayout(_run_dir(layout, CONFIG)).daily_step(4)) as f:
        record = json.load(f)
    [uninterrupted] = days["day4"]
    for key in ("ctr_auc", "ctr_1d_auc", "engagement_rmse"):
        assert record["metrics"][key] == pytest.approx(uninterrupted["metrics"][key], abs=1e-3), key
    assert record["metrics"]["examples"] == uninterrupted["metrics"]["examples"]
    assert _served(layout) == [(1, 2), (2, 3), (3, 4)]  # published once


def test_the_cli_refuses_a_step_without_held_out_rows(days, tmp_path, capsys):
    """The CLI's steps run from a shell in tests/test_docs_operating.py; here, the refusal before any work."""
    layout = RunLayout(str(tmp_path / "world"))
    shutil.copytree(days["before4"], layout.root, symlinks=True)
    argv = ["daily", "--run_dir", layout.root, "--representation", REPRESENTATION, "--holdout_per_mille", "0"]
    assert cli.main(argv) == 2
    assert "--holdout_per_mille must be >= 1" in capsys.readouterr().err
    assert _served(layout) == [(1, 2), (2, 3)]  # nothing changed


def test_training_leaves_out_exactly_the_held_out_users_rows_of_each_day(worlds, days, tmp_path, monkeypatch):
    """The rows blessing scores are the rows the fit never saw: each day's fit gets the day without the held-out
    users' rows (counted where the day loop hands the data to Keras)."""
    from models.ranker import MultitaskRanker

    fitted, fit = [], MultitaskRanker.fit

    def counting_fit(self, data, *args, **kwargs):
        fitted.append(sum(int(batch[fk.CLICK].shape[0]) for batch in data))
        return fit(self, data, *args, **kwargs)

    monkeypatch.setattr(MultitaskRanker, "fit", counting_fit)
    layout = worlds["daily"]
    transform_dir = layout.transform_output(REPRESENTATION)
    day_loop.train(transform_dir, str(tmp_path / "run"), CONFIG, log=lambda *_: None, export_every_day=False,
                   fit_verbose=0)
    expected = []
    for day in (1, 2, 3, 4):
        logs = log_io.read_logs(layout.data, days=[day])
        held = bless.held_out_rows(logs, day, CONFIG.holdout_per_mille).size
        assert 0 < held < logs.size
        expected.append(logs.size - held)
    assert fitted == expected


def test_published_versions_only_increase_and_the_newest_n_stay(tmp_path):
    source = tmp_path / "export"
    (source / "variables").mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(b"model")
    (source / "variables" / "variables.index").write_bytes(b"index")
    base = str(tmp_path / "serving")
    versions = [publish_version(str(source), base, {"trained_through_day": day},
                                lambda d: ExportLayout(d).publication, keep=2) for day in (5, 6, 7)]
    assert versions == [1, 2, 3] and list_versions(base) == [2, 3]
    with open(ExportLayout(os.path.join(base, "3")).publication) as f:
        assert json.load(f) == {"trained_through_day": 7, "version": 3}
    assert sorted(os.listdir(base)) == ["2", "3"]  # no staging left behind
    with pytest.raises(ValueError, match="keep must be >= 1"):
        publish_version(str(source), base, {}, lambda d: ExportLayout(d).publication, keep=0)


def test_retention_keeps_what_the_servers_config_names(tmp_path):
    """A label or a specific policy pins a version; latest N keeps N. Without that, retention would delete a
    version a server is asked for by label, and requests by that label would fail."""
    source = tmp_path / "export"
    (source / "variables").mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(b"model")
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "ranker" base_path: "/serving/ranker"'
                      ' model_version_policy { latest { num_versions: 3 } } version_labels { key: "stable" value: 1 } }'
                      ' config { name: "other" base_path: "/x" version_labels { key: "stable" value: 2 } } }')
    daily_config = daily.DailyConfig(keep_versions=1, model_config_file=str(config))
    keep, protected = daily._retention(daily_config)
    assert (keep, protected) == (3, {1})
    base = str(tmp_path / "serving")
    for day in range(5):
        publish_version(str(source), base, {}, lambda d: ExportLayout(d).publication, keep, protected)
    assert list_versions(base) == [1, 3, 4, 5]
    config.write_text("model_config_list { config { name: \"ranker\" } }")
    with pytest.raises(ValueError, match="base_path"):
        daily._retention(daily_config)


def test_a_day_without_log_files_stops_before_anything_changes(days, tmp_path):
    layout = RunLayout(str(tmp_path / "world"))
    shutil.copytree(days["before4"], layout.root, symlinks=True)
    shutil.rmtree(layout.data.day_dir(4))
    os.makedirs(layout.data.day_dir(4))  # the partition is there, its files are not
    assert _keep_sids_of_items_seen_by(layout, 3) > 0  # items a step would otherwise give SIDs first
    sids = _files(layout.sids)
    with pytest.raises(ValueError, match="no files matching"):
        daily.run(layout, STEP, CONFIG, CHECKS, IN_MEMORY, log=lambda *_: None)
    assert day_loop.read_protocol_card(layout.transform_output(REPRESENTATION))["days"] == [1, 2, 3]
    assert _files(layout.sids) == sids and _served(layout) == [(1, 2), (2, 3)]


def _odds_shifted_copy(export_dir: str, target: str, shift: float) -> str:
    """The export with every click probability's logit shifted by `shift` (odds times e^shift), as a SavedModel
    of its own beside the same card and warm-up requests: the ranking, hence the AUC, is unchanged."""
    loaded = tf.saved_model.load(export_dir)
    serve = loaded.signatures["serving_default"]

    class OddsShifted(tf.Module):
        def __init__(self):
            super().__init__()
            self.inner = loaded

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, examples):
            out = dict(serve(examples=examples))
            p = tf.clip_by_value(out[fk.CLICK_PROBABILITY], 1e-7, 1 - 1e-7)
            out[fk.CLICK_PROBABILITY] = tf.sigmoid(tf.math.log(p) - tf.math.log1p(-p) + shift)
            return out

    module = OddsShifted()
    tf.saved_model.save(module, target, signatures={"serving_default": module.__call__})
    for name in os.listdir(export_dir):  # the card and the warm-up requests (assets.extra)
        if not os.path.exists(os.path.join(target, name)):
            (shutil.copytree if os.path.isdir(os.path.join(export_dir, name)) else shutil.copy)(
                os.path.join(export_dir, name), os.path.join(target, name))
    return target


def test_a_candidate_with_the_same_auc_but_doubled_odds_is_not_blessed(worlds, days, tmp_path):
    """AUC cannot see a model whose predicted CTRs are all too high; the blessing's calibration band and NE
    margin (their defaults) can. The served model is day 3's export shifted to be calibrated on the held-out rows
    (this small world's ranker is not, on 300 rows); the candidate is the same with its odds doubled."""
    from beam_jobs import held_out_rows

    layout, [day3] = worlds["daily"], days["day3"]
    rows = held_out_rows.read(TransformLayout(layout.transform_output(REPRESENTATION)).held_out_day(
        CONFIG.holdout_per_mille, 3), 3)
    items = bless.ItemFeatures(layout.sids, layout.data.corpus)
    p = np.clip(bless.ScoredExport(day3["candidate"]).held_out_scores(rows, items).astype(np.float64), 1e-7, 1 - 1e-7)
    logits, rate = np.log(p) - np.log1p(-p), np.mean(rows.click)
    low, high = -10.0, 10.0  # the shift that makes the mean prediction the click rate
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if np.mean(1 / (1 + np.exp(-(logits + middle)))) < rate else (low, middle)
    calibrated = _odds_shifted_copy(day3["candidate"], str(tmp_path / "calibrated"), low)
    doubled = _odds_shifted_copy(day3["candidate"], str(tmp_path / "odds_doubled"), low + np.log(2.0))
    defaults = bless.BlessConfig(min_auc=0.0)  # this small world's AUC is barely above 0.5
    verdict = bless.bless(doubled, calibrated, rows, items, defaults)
    assert verdict["candidate_auc"] == pytest.approx(verdict["served_auc"], abs=1e-4)
    assert verdict["served_calibration"] == pytest.approx(1.0, abs=1e-3)
    assert not verdict["blessed"]
    assert verdict["candidate_calibration"] > defaults.max_calibration
    assert any(reason.startswith("held-out calibration") for reason in verdict["reasons"]), verdict["reasons"]
    assert verdict["candidate_ne"] > verdict["served_ne"] + defaults.max_ne_increase
    assert any(reason.startswith("held-out NE") for reason in verdict["reasons"]), verdict["reasons"]
    # The calibrated export against itself, on the same rows and rules, is blessed.
    assert bless.bless(calibrated, calibrated, rows, items, defaults)["blessed"]


def test_each_step_records_the_lineage_s_health_and_sidrec_health_shows_the_trend(worlds, days):
    """Day 3's record: its new items (first seen on day 3) against the items the lineage was fitted with (first
    seen by day 2), worked out here from the SID table and the corpus; `sidrec health` prints every step."""
    layout = worlds["daily"]
    [day3] = days["day3"]
    health = day3["health"]
    table = sid_table_io.read_sid_table(SidTableLayout(layout.sids).table)
    corpus = corpus_io.read_corpus(layout.data.corpus)
    first_day = dict(zip(corpus.item_ids, corpus.first_day))
    days_of = np.array([first_day[i] for i in table.item_ids])
    new, lineage, known = (table.sids[days_of == 3], table.sids[days_of <= 2], table.sids[days_of <= 3])
    assert health["new_items"] == len(new) >= 30
    rows = [tuple(r) for r in known]
    assert health["collision_rate"] == pytest.approx(np.mean([rows.count(tuple(r)) > 1 for r in new]))
    lineage_rows = [tuple(r) for r in lineage]
    assert health["lineage_collision_rate"] == pytest.approx(
        np.mean([lineage_rows.count(r) > 1 for r in lineage_rows]))
    assert health["cold_start_share"] == pytest.approx(
        day3["metrics"]["cold_start_examples"] / day3["metrics"]["examples"])
    assert len(health["perplexity_ratio"]) == table.sids.shape[1] and health["refresh_advised"] == bool(health["tripped"])
    run = RankerLayout(_run_dir(layout, CONFIG))  # a step's probe would be the day it evaluates: none is scored
    assert os.path.exists(run.predictions(3)) and not os.path.exists(run.probe_predictions(3))
    # The row lookups kept in the checkpoint: every piece of every trained row of the days taken, by hand.
    latest = tf.train.latest_checkpoint(run.checkpoints)
    through = int(tf.train.load_variable(latest, "day/.ATTRIBUTES/VARIABLE_VALUE"))
    kept = tf.train.load_variable(latest, "lookups/.ATTRIBUTES/VARIABLE_VALUE")
    by_hand = np.zeros_like(kept)
    transform_dir = layout.transform_output(REPRESENTATION)
    for d in range(1, through + 1):
        for batch in day_loop.day_dataset(transform_dir, d, 256, CONFIG.holdout_per_mille):
            for key in (fk.WATCH_PIECES, fk.CANDIDATE_PIECES, fk.HISTORY_PIECES):
                np.add.at(by_hand, batch[key].values.numpy(), 1)
    np.testing.assert_array_equal(kept, by_hand)
    assert 0 <= health["untrained_piece_share"] <= health["untrained_piece_share_new"] <= 1
    aged = {**day3, "health": {**health, "tripped": ["collisions 40%", "first level 0.40"], "refresh_advised": True}}
    assert daily.describe_step(aged).endswith(" s; refresh advised: collisions 40%; first level 0.40")
    assert "refresh advised" not in daily.describe_step({**day3, "health": {**health, "tripped": []}})
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "sidrec"), "health", "--run_dir", layout.root],
                         capture_output=True, text=True, check=True).stdout  # as a user runs it
    assert f"   3 {health['cold_start_share']:>16.1%} {health['new_items']:>9,} " in out
    assert "figure: " in out and os.path.exists(out.split("figure: ")[1].split("\n")[0])
