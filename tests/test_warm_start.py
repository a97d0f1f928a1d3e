"""Warm start of a new lineage's ranker from the served one (pipeline.stages.warm_start), on the small world: the
served ranker is SPM 300 trained through day 3, the new lineage bigram SIDs of the same items."""

import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse

from pipeline.core.layout import RankerLayout, SidTableLayout
from pipeline.core.tf_env import tf
from pipeline.data import log_io, sid_table_io
from pipeline.stages import bless, day_loop, warm_start
from worlds import IN_MEMORY, run_transform

CONFIG = day_loop.TrainConfig(batch_size=256, hidden_dims=(16,), embedding_dim=8)  # spm_ranker's


def test_the_least_squares_table_reproduces_vectors_a_table_can_reproduce():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(40, 3))
    pieces = [rng.choice(40, size=2, replace=False) for _ in range(200)]
    targets = warm_start.item_vectors(truth, pieces)
    fitted = warm_start.fit_table(pieces, targets, rows=41, damp=1e-6)
    np.testing.assert_allclose(warm_start.item_vectors(fitted, pieces), targets, atol=1e-3)
    assert np.abs(fitted[40]).max() == 0.0  # a row no item uses stays 0
    # Damping pulls a row that one item uses toward zero more than one that many use.
    damped = warm_start.fit_table(pieces + [np.array([40])], np.vstack([targets, np.ones((1, 3))]), rows=41, damp=1.0)
    assert 0 < damped[40, 0] < 0.6


@pytest.fixture(scope="module")
def warm(run_dir, spm_run, spm_ranker, tmp_path_factory):
    new = run_transform(run_dir, "sid_ngram", ngram=2)
    target = str(tmp_path_factory.mktemp("warm") / "run")
    result = warm_start.run(spm_run["output"], spm_ranker["run"], new["output"], target, CONFIG, start_day=3,
                            served_sids=run_dir.sids, new_sids=run_dir.sids)
    return {"new": new, "run": target, "result": result}


def _restored(transform_dir: str, run: str):
    card = day_loop.read_protocol_card(transform_dir)
    model = warm_start._built(card, transform_dir, CONFIG)
    tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(RankerLayout(run).checkpoints)).expect_partial()
    return model


def test_a_warm_start_copies_every_layer_but_the_item_table_and_fits_that_to_the_served_vectors(
        run_dir, spm_run, spm_ranker, warm):
    result = warm["result"]
    served, new = _restored(spm_run["output"], spm_ranker["run"]), _restored(warm["new"]["output"], warm["run"])
    assert result["copied"] == ["trunk", "click_head", "engagement_head"]
    for name in result["copied"]:  # the checkpoint holds the served layers, not a fresh initialisation
        for a, b in zip(getattr(served, name).get_weights(), getattr(new, name).get_weights()):
            np.testing.assert_array_equal(a, b)
    # The new table, by hand: every item's bigram pieces against its SPM vector under the served table.
    table = warm_start._table_items(run_dir.sids)
    ids = np.array(sorted(table), dtype=object)
    sids = np.stack([table[i] for i in ids])
    card = day_loop.read_protocol_card(warm["new"]["output"])
    new_config = warm_start.RepresentationConfig(**card["config"])
    served_config = warm_start.RepresentationConfig(**day_loop.read_protocol_card(spm_run["output"])["config"])
    old_pieces = warm_start.pieces_of(served_config, ids, sids, day_loop.read_spm_model(spm_run["output"]))
    new_pieces = warm_start.pieces_of(new_config, ids, sids)
    assert all(len(p) == 2 for p in new_pieces)  # bigram: L / 2 pieces
    targets = warm_start.item_vectors(warm_start.item_table(served).numpy(), old_pieces)
    fitted = warm_start.item_table(new).numpy()
    reproduced = warm_start.item_vectors(fitted, new_pieces)
    error = np.linalg.norm(reproduced - targets) / np.linalg.norm(targets)
    assert result["relative_error"] == pytest.approx(error, rel=1e-5) and result["items"] == len(ids)
    # Better than any table that ignores the items: the rows' mean vector for every item.
    assert error < 0.5 * np.linalg.norm(targets - targets.mean(0)) / np.linalg.norm(targets)
    # The fitted table is LSQR's damped least squares: its normal equations hold.
    lengths = [len(p) for p in new_pieces]
    a = scipy.sparse.csr_matrix((np.ones(sum(lengths)), np.concatenate(new_pieces), np.r_[0, np.cumsum(lengths)]),
                                shape=(len(ids), card["table_rows"]))
    gradient = a.T @ (a @ fitted - targets) + 0.1 ** 2 * fitted
    assert np.abs(gradient).max() < 1e-2 * np.abs(a.T @ targets).max()


def test_the_warm_started_run_goes_on_from_its_start_day(warm):
    lines = []
    history = day_loop.train(warm["new"]["output"], warm["run"], CONFIG, log=lines.append)
    assert lines[0].startswith("resuming after day 2")
    assert [e["evaluated_on_day"] for e in history] == [3] and history[0]["ctr_auc"] > 0.55


def test_sidrec_refresh_fits_a_new_lineage_beside_the_served_one_and_warm_starts_it(run_dir, spm_run, spm_ranker,
                                                                                    tmp_path):
    """From the shell, as the operator runs it: the served lineage is the small world's SPM 300 and its ranker."""
    served = tmp_path / "served"
    (served / "transform").mkdir(parents=True)
    for name in ("data", "sids", "rqvae"):
        os.symlink(os.path.join(run_dir.root, name), served / name)
    os.symlink(spm_run["output"], served / "transform" / "sid_spm_300")
    new = tmp_path / "new"
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "sidrec"), "refresh", "--run_dir", str(served),
                          "--new_run_dir", str(new), "--representation", "sid_spm_300", "--served_run",
                          spm_ranker["run"], "--batch_size", "256", "--hidden_dims", "16", "--embedding_dim", "8",
                          *IN_MEMORY], capture_output=True, text=True, check=True)
    assert out.stderr == "", out.stderr
    lines = out.stdout.splitlines()
    assert lines[-3].startswith(f"new lineage: {new} (sid_spm_300, its vocabulary from the days before day 3)")
    assert "items' vectors carried over to 301 rows" in lines[-2]  # 300 pieces and the OOV row
    assert "trained through day 2" in lines[-2]
    card = day_loop.read_protocol_card(str(new / "transform" / "sid_spm_300"))
    assert card["eval_from"] == 3 and card["days"] == [1, 2, 3]
    assert os.path.realpath(new / "data") == os.path.realpath(run_dir.data.root)  # the served lineage's data
    [ranker] = os.listdir(new / "ranker")
    assert tf.train.latest_checkpoint(str(new / "ranker" / ranker / "checkpoints"))


def test_a_cold_start_is_the_day_loop_s_own_initialisation_on_the_same_budget(run_dir, spm_run, spm_ranker, warm,
                                                                               tmp_path):
    """`sidrec refresh --start cold`, the warm start's control: nothing carried over, trained from the same day."""
    target = str(tmp_path / "cold")
    result = warm_start.run(spm_run["output"], spm_ranker["run"], warm["new"]["output"], target, CONFIG, start_day=3,
                            served_sids=run_dir.sids, new_sids=run_dir.sids, warm=False)
    assert result["copied"] == [] and result["trained_through_day"] == 2 and not result["warm"]
    cold = _restored(warm["new"]["output"], target)
    tf.keras.utils.set_random_seed(CONFIG.seed)
    fresh = warm_start._built(day_loop.read_protocol_card(warm["new"]["output"]), warm["new"]["output"], CONFIG)
    for a, b in zip(cold.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    history = day_loop.train(warm["new"]["output"], target, CONFIG, log=lambda *_: None)
    assert [e["evaluated_on_day"] for e in history] == [3]


def test_a_served_version_of_another_lineage_is_blessed_on_its_own_sids_not_the_candidate_s(run_dir, spm_ranker,
                                                                                            tmp_path):
    """After a refresh the candidate's SID table comes from another RQ-VAE than the served version's: the served
    export is sent content embeddings and scores as on its own table; the other table's codes would change it."""
    export = os.path.join(spm_ranker["export"], str(spm_ranker["history"][-1]["evaluated_on_day"]))
    rows = log_io.read_log_file(log_io.day_files(run_dir.data, 3)[0], 3)
    rows = rows.select(np.arange(rows.size) < 300)
    served = bless.ScoredExport(export)
    own = served.held_out_scores(rows, bless.ItemFeatures(run_dir.sids, run_dir.data.corpus))
    table = sid_table_io.read_sid_table(SidTableLayout(run_dir.sids).table)

    def other_table(name: str, version: str) -> str:  # every item's SID moved to the next item's
        directory = tmp_path / name
        os.makedirs(SidTableLayout(str(directory)).table)
        pq.write_table(sid_table_io.sid_parquet_table(table.item_ids, np.roll(table.sids, 1, axis=0), version),
                       os.path.join(SidTableLayout(str(directory)).table, "part-00000-of-00001.parquet"))
        return str(directory)

    foreign = bless.ItemFeatures(other_table("foreign", "another-rqvae"), run_dir.data.corpus)
    np.testing.assert_allclose(served.held_out_scores(rows, foreign), own, rtol=1e-4, atol=1e-6)
    # The same moved codes presented as the export's own RQ-VAE's are sent as they are, and score differently.
    mislabelled = bless.ItemFeatures(other_table("mislabelled", served.rqvae_version), run_dir.data.corpus)
    assert np.abs(served.held_out_scores(rows, mislabelled) - own).max() > 1e-3
