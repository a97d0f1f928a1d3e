"""The day loop under the evaluation protocol: progressive validation, no look-ahead, resume after a kill."""

import filecmp
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from beam_jobs import transform
from pipeline.core import features as fk
from pipeline.core import slices
from pipeline.core.cards import read_representation, read_serving_sample
from pipeline.core.layout import RankerLayout, SidTableLayout
from pipeline.core.metrics import binary_auc
from pipeline.core.representation import RepresentationConfig
from pipeline.data import corpus_io, log_io, sid_table_io
from pipeline.sid.serving_examples import ServingExampleBuilder
from pipeline.stages import day_loop
from serving import export
from worlds import IN_MEMORY, copy_world

CONFIG = day_loop.TrainConfig(batch_size=256, hidden_dims=(32,))


class _FixedScores:
    """A stand-in ranker whose scores are carried in the batch, so the metrics can be worked out by hand."""

    def __call__(self, batch):
        return {"click_probability": batch["score"][:, None], "engagement": batch["engagement_prediction"][:, None]}


def _rows(scores):
    return tf.data.Dataset.from_tensor_slices({
        "score": tf.constant(scores, tf.float32),
        fk.CLICK: tf.constant([1, 0, 1, 0, 1, 0], tf.int64),
        fk.COLD_START: tf.constant([1, 1, 1, 0, 0, 0], tf.int64),
        fk.USER_KEY: tf.constant([7, 7, 8, 8, 9, 9], tf.int64),
        fk.ITEM_AGE: tf.constant([0, 0, 0, 3, 10, 2], tf.int64),
        fk.CANDIDATE_KEY: tf.constant([11, 11, 12, 13, 14, 15], tf.int64),
        fk.ENGAGEMENT: tf.constant([0.5, 0.0, 0.4, 0.0, 0.9, 0.0], tf.float32),
        "engagement_prediction": tf.constant([0.6, -0.1, 0.5, -0.1, 1.0, -0.1], tf.float32),
    }).batch(4)  # two batches: the metrics are over the whole day, not averaged per batch


def test_evaluate_day_on_rows_worked_out_by_hand():
    result = day_loop.evaluate_day(_FixedScores(), _rows([0.9, 0.8, 0.2, 0.1, 0.7, 0.3]))
    # Overall: positives 0.9, 0.2, 0.7 against negatives 0.8, 0.1, 0.3 win 3 + 1 + 2 of 9 pairs.
    assert result["ctr_auc"] == pytest.approx(6 / 9)
    # Cold start (rows 0-2): positives 0.9, 0.2 against the negative 0.8 win 1 of 2 pairs.
    assert result["ctr_1d_auc"] == pytest.approx(0.5)
    assert (result["examples"], result["cold_start_examples"]) == (6, 3)
    assert result["engagement_rmse"] == pytest.approx(0.1)


def test_log_loss_ne_calibration_and_slices_on_rows_worked_out_by_hand():
    # Items 11, 12, 13 were impressed 10, 5 and 1 times in the training window: head, torso, tail by thirds of
    # the 16 impressions; 14 and 15 were never impressed (unseen).
    bands = slices.PopularityBands(np.array([13, 11, 12]), np.array([1, 10, 5]))
    result = day_loop.evaluate_day(_FixedScores(), _rows([0.9, 0.8, 0.2, 0.1, 0.7, 0.3]), bands=bands)
    # Clicked rows score 0.9, 0.2, 0.7 and the others 0.8, 0.1, 0.3: -ln of 0.9, 0.2, 0.7, 0.2, 0.9, 0.7.
    loss = -(np.log(0.9) + np.log(0.2) + np.log(0.7)) / 3
    assert result["ctr_log_loss"] == pytest.approx(loss)
    assert result["ctr_ne"] == pytest.approx(loss / np.log(2))  # the day's click rate is 1/2: entropy ln 2
    assert result["calibration"] == pytest.approx(3.0 / 3)  # 3.0 clicks predicted, 3 clicked
    assert result["calibration_1d"] == pytest.approx(1.9 / 2)  # cold rows 0-2: 0.9 + 0.8 + 0.2 against 2
    age = result["slices"]["age"]
    assert age["new"]["impressions"] == 3 and age["new"]["ctr_auc"] == pytest.approx(0.5)
    assert age["1-7 days"] == {"impressions": 2, "clicks": 0, "ctr_auc": None, "ne": None, "calibration": None}
    assert age["older"] == {"impressions": 1, "clicks": 1, "ctr_auc": None, "ne": None,
                            "calibration": pytest.approx(0.7)}
    popularity = result["slices"]["popularity"]
    assert {name: popularity[name]["impressions"] for name in slices.POPULARITY_BANDS} == {
        "head": 2, "torso": 1, "tail": 1, "unseen": 2}
    assert popularity["head"]["ctr_auc"] == 1.0 and popularity["unseen"]["ctr_auc"] == 1.0
    assert popularity["head"]["ne"] == pytest.approx(-(np.log(0.9) + np.log(0.2)) / 2 / np.log(2))
    assert popularity["torso"]["calibration"] == pytest.approx(0.2)


def test_a_diverged_model_is_not_reported_as_perfect():
    with pytest.raises(ValueError, match="not finite"):
        day_loop.evaluate_day(_FixedScores(), _rows([np.nan, 0.8, np.nan, 0.1, np.nan, 0.3]))


def test_each_evaluation_day_is_evaluated_before_the_model_trains_on_it(spm_run, tmp_path):
    logs = []
    history = day_loop.train(spm_run["output"], str(tmp_path / "run"), CONFIG, log=logs.append, export_every_day=False)
    assert [(e["evaluated_on_day"], e["trained_through_day"]) for e in history] == [(2, 1), (3, 2)]
    assert all(0.5 < e["ctr_auc"] <= 1 for e in history) and history[-1]["cold_start_examples"] > 0
    starts = [line for line in logs if line.startswith("day ")]
    assert starts[0].startswith("day 1 (1/3): fit on day 1 (training window")
    assert starts[1].startswith("day 2 (2/3): evaluate on day 2, unseen, then fit on it")


def test_each_evaluation_day_scores_as_the_export_trained_through_the_day_before(run_dir, spm_run, spm_ranker):
    """Progressive validation by another path: the export published after day d-1, fed day d's logged rows as
    raw requests (SIDs joined from the table), gives the AUCs the loop reported for day d. A model that had
    trained on day d before evaluating it would not."""
    sids = sid_table_io.read_sid_table(SidTableLayout(run_dir.sids).table).lookup()
    corpus = corpus_io.read_corpus(run_dir.data.corpus)
    first_day = dict(zip(corpus.item_ids, corpus.first_day))
    builder = ServingExampleBuilder(RepresentationConfig(**read_representation(spm_run["output"])["config"]), sids)
    assert [e["evaluated_on_day"] for e in spm_ranker["history"]] == [2, 3]
    for entry in spm_ranker["history"]:
        day = entry["evaluated_on_day"]
        assert entry["trained_through_day"] == day - 1
        logs = log_io.read_logs(run_dir.data, days=[day])
        records = builder.serialize(list(logs.watch_item_id), list(logs.candidate_item_id),
                                    [logs.history(row) for row in range(logs.size)])
        serve = tf.saved_model.load(os.path.join(spm_ranker["export"], str(day - 1))).signatures["serving_default"]
        scores = np.concatenate([serve(examples=tf.constant(records[i:i + 512]))[fk.CLICK_PROBABILITY].numpy()
                                 for i in range(0, len(records), 512)])
        cold = np.array([first_day[item] == day for item in logs.candidate_item_id])
        assert cold.any() and entry["cold_start_examples"] == cold.sum() and entry["examples"] == logs.size
        assert binary_auc(logs.click, scores) == pytest.approx(entry["ctr_auc"], abs=1e-5), day
        assert binary_auc(logs.click[cold], scores[cold]) == pytest.approx(entry["ctr_1d_auc"], abs=1e-5), day


def test_day_loop_resumes_after_a_kill_with_the_metrics_of_an_uninterrupted_run(spm_run, tmp_path):
    """Killed mid-day 2 (day 1 checkpointed), the rerun resumes after day 1 and ends as a whole run does."""
    # Exports are left out (export_every_day=False): the day loop's resumption is what is under test.
    whole = day_loop.train(spm_run["output"], str(tmp_path / "whole"), CONFIG, log=lambda *_: None,
                           export_every_day=False)
    killed = str(tmp_path / "killed")
    script = (f"from pipeline.stages import day_loop\n"
              f"config = day_loop.TrainConfig(batch_size=256, hidden_dims=(32,))\n"
              f"day_loop.train({spm_run['output']!r}, {killed!r}, config, log=lambda msg: print(msg, flush=True), "
              "export_every_day=False)\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("day 2 ("):  # day 1 finished and checkpointed: kill it mid-day 2
            process.kill()
            break
    assert process.wait() == -signal.SIGKILL, "the child finished before it could be killed"
    assert tf.train.latest_checkpoint(os.path.join(killed, "checkpoints")), "no checkpoint before the kill"

    logs = []
    resumed = day_loop.train(spm_run["output"], killed, CONFIG, log=logs.append, export_every_day=False)
    assert logs[0].startswith("resuming after day 1 ")
    started = [m.group(1) for m in map(re.compile(r"^day (\d+) \(\d+/\d+\)").match, logs) if m]
    assert started == ["2", "3"]  # training resumed after day 1, not from the start
    assert [e["evaluated_on_day"] for e in resumed] == [2, 3]
    for a, b in zip(whole, resumed):
        assert a["ctr_auc"] == pytest.approx(b["ctr_auc"], abs=1e-6)
        assert a["ctr_1d_auc"] == pytest.approx(b["ctr_1d_auc"], abs=1e-6)


def _other_logs(layout, day: int) -> None:
    """Rewrites a day's logs: other candidates (shuffled across rows) and flipped clicks."""
    logs = log_io.read_logs(layout.data, days=[day])
    logs.candidate_item_id = np.random.default_rng(day).permutation(logs.candidate_item_id)
    logs.click = 1 - logs.click
    log_io.write_day(layout.data, day, logs)


def _transform(layout, output):
    return transform.run(transform.TransformConfig(data_dir=layout.data.root, sids=layout.sids, output=output,
                                                   kind="sid_spm", vocab_size=300, eval_from=2), IN_MEMORY)["output"]


def _vocabulary(transform_dir: str) -> list[tuple[str, float]]:
    """The SentencePiece pieces and scores (the model file also records the trainer's temporary input path)."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=os.path.join(transform_dir, "spm", "sid_spm.model"))
    return [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]


def _examples(records: list[bytes]) -> list[tf.train.Example]:
    """Parsed, since a map's serialisation order (and a GZIP header) may differ between equal records."""
    return [tf.train.Example.FromString(r) for r in records]


def _transformed(transform_dir: str, day: int) -> list[tf.train.Example]:
    files, compression = day_loop.transformed_day_files(transform_dir, day)
    return _examples([r.numpy() for r in tf.data.TFRecordDataset(files, compression_type=compression)])


def _same_files(a: str, b: str, relative: str) -> bool:
    return filecmp.cmp(os.path.join(a, relative), os.path.join(b, relative), shallow=False)


def test_no_look_ahead_an_evaluation_days_logs_change_nothing_learned_or_evaluated_before_it(run_dir, tmp_path):
    """Days 2 and 3 are evaluation days (T = 1): changing either leaves the vocabulary, the popularity
    buckets, the warm-up sample and every earlier day's examples and metrics exactly as they were."""
    base = _transform(run_dir, str(tmp_path / "base"))
    changed = {}
    for day in (2, 3):
        world = copy_world(run_dir, str(tmp_path / f"world{day}"))
        _other_logs(world, day)
        changed[day] = _transform(world, str(tmp_path / f"changed{day}"))
    for day, output in changed.items():
        assert _vocabulary(output) == _vocabulary(base), day
        assert _same_files(base, output, "lookups.json"), day  # the popularity buckets
        assert _examples(read_serving_sample(output)) == _examples(read_serving_sample(base)), day  # warm-up rows
        for earlier in range(1, day):
            assert _transformed(output, earlier) == _transformed(base, earlier), (day, earlier)
        card = day_loop.read_protocol_card(output)
        assert card["train_days"] == [1] and min(card["eval_days"]) > max(card["train_days"])

    before = day_loop.train(base, str(tmp_path / "run_base"), CONFIG, log=lambda *_: None, export_every_day=False)
    after = day_loop.train(changed[3], str(tmp_path / "run_changed3"), CONFIG, log=lambda *_: None,
                           export_every_day=False)
    assert before[0]["evaluated_on_day"] == after[0]["evaluated_on_day"] == 2
    assert before[0]["ctr_auc"] == pytest.approx(after[0]["ctr_auc"], abs=1e-7)
    assert before[0]["ctr_1d_auc"] == pytest.approx(after[0]["ctr_1d_auc"], abs=1e-7)
    assert before[1]["ctr_auc"] != pytest.approx(after[1]["ctr_auc"], abs=1e-3)  # day 3 itself did change


def test_day_loop_exports_one_version_per_day(spm_ranker):
    base = spm_ranker["export"]
    assert export.versions(base) == [1, 2, 3]  # trained on every day
    # Each evaluation day's entry names the version trained through it.
    assert [e["export"] for e in spm_ranker["history"]] == [os.path.join(base, "2"), os.path.join(base, "3")]
    assert not [n for n in os.listdir(base) if "staging" in n]
    events = tf.io.gfile.glob(os.path.join(RankerLayout(spm_ranker["run"]).tensorboard, "*", "events.out.tfevents.*"))
    assert {os.path.basename(os.path.dirname(e)) for e in events} >= {"train", "next_day"}
