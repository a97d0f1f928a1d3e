"""`sidrec experiment` end to end on the small world: transforms, trains, and prints the paper's table."""

import json
import os

import pytest

from pipeline import cli, experiment
from serving import export
from worlds import IN_MEMORY


def test_experiment_prints_the_table_relative_to_random_hash(run_dir, capsys):
    argv = ["experiment", "--run_dir", run_dir.root, "--arms", "random_hash:8192,dense:1,sid_ngram:2",
            "--batch_size", "256", "--hidden_dims", "16", "--embedding_dim", "8", *IN_MEMORY]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "% change vs random_hash_8192" in out and "oracle (true CTR)" in out
    with open(os.path.join(run_dir.metrics, "experiment.json")) as f:
        results = json.load(f)
    labels = [r["label"] for r in results["runs"]]
    assert labels == ["random_hash_8192", "random_hash_8192_no_history", "dense", "sid_2gram", "sid_2gram_no_history"]
    for r in results["runs"]:
        assert r["days"] == [2, 3] and 0 < r["ctr_auc"] <= 1
        if r["representation"] == "random_hash_8192":
            assert r["ctr_auc_change_pct"] == 0 and r["ctr_1d_auc_change_pct"] == 0
        baseline = next(b for b in results["runs"] if b["representation"] == "random_hash_8192"
                        and b["use_history"] == r["use_history"])
        assert r["ctr_auc_change_pct"] == pytest.approx(100 * (r["ctr_auc"] / baseline["ctr_auc"] - 1))
    assert 0.5 < results["oracle"]["ctr_auc"] <= 1
    assert os.path.getsize(os.path.join(run_dir.report, "experiment.png")) > 10_000
    # Experiments export only the last day's model.
    assert export.versions(os.path.join(run_dir.ranker, "sid_2gram", "export")) == [2]


def test_experiment_needs_the_baseline(run_dir, capsys):
    assert cli.main(["experiment", "--run_dir", run_dir.root, "--arms", "sid_ngram:2"]) == 2
    assert "add random_hash:8192" in capsys.readouterr().err


def test_experiment_arms_are_parsed_and_refused_clearly():
    arms = experiment.parse_arms("random_hash:8192, dense:1.5,sid_ngram:2,sid_spm:300")
    assert [a.representation for a in arms] == ["random_hash_8192", "dense", "sid_2gram", "sid_spm_300"]
    assert arms[1].depth_multiplier == 1.5 and arms[1].history_settings == (False,)
    for bad, message in (("hashing:8", "kind must be one of"), ("sid_spm:big", "must be a number"), ("", "no arms")):
        with pytest.raises(ValueError, match=message):
            experiment.parse_arms(bad)
