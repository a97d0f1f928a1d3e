"""`sidrec experiment` end to end on the small world: transforms, trains, and prints the paper's table."""

import json
import os

import pytest

from pipeline import cli
from pipeline.stages import experiment
from worlds import IN_MEMORY


def test_experiment_needs_a_baseline(run_dir, capsys):
    assert cli.main(["experiment", "--run_dir", run_dir.root, "--arms", "sid_ngram:2"]) == 2
    assert "add a random_hash arm" in capsys.readouterr().err
    assert cli.main(["experiment", "--run_dir", run_dir.root, "--arms", "sid_ngram:2", "--baseline", "dense"]) == 2
    assert "not one of the arms" in capsys.readouterr().err


def test_any_arm_can_be_the_baseline():
    arms = experiment.parse_arms("random_hash:8192,sid_ngram:1,dense:2")
    assert experiment.baseline_arm(arms) == arms[0]
    assert experiment.baseline_arm(arms, "sid_ngram:1") == arms[1]
    assert experiment.baseline_arm(arms, "dense:2") == arms[2]
    runs = [{"label": "a", "use_history": h, "is_baseline": b, "ctr_auc": v, "ctr_1d_auc": v}
            for h, b, v in ((True, False, 0.6), (False, True, 0.5), (False, False, 0.55))]
    changes = [r["ctr_auc_change_pct"] for r in experiment._relative_to_baseline(runs)]
    # A baseline without a history run (dense) is what the arms with history are compared with too.
    assert changes == pytest.approx([20.0, 0.0, 10.0])


def _experiment(world, capsys, *flags):
    """One SID arm, its own baseline: a transform over the SID table and two ranker runs (with and without
    the history) are what the fingerprints decide on."""
    argv = ["experiment", "--run_dir", world.root, "--arms", "sid_ngram:2", "--baseline", "sid_ngram:2",
            "--batch_size", "256", "--hidden_dims", "16", "--embedding_dim", "8", *IN_MEMORY, *flags]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    return out, out[out.index("mean over the evaluation days"):]


def test_fingerprints_reuse_exactly_what_is_unchanged_and_rebuild_what_is_downstream(run_dir, tmp_path, capsys):
    from worlds import copy_world

    world = copy_world(run_dir, str(tmp_path / "world"))
    _, table = _experiment(world, capsys)
    trained = lambda out: out.count("): fit on day 1 (training window")  # noqa: E731  (one per ranker run)

    out, again = _experiment(world, capsys)  # unchanged: every output reused, the same table
    assert again == table and trained(out) == 0 and out.count("is up to date") == 1
    assert "rebuilding" not in out

    out, _ = _experiment(world, capsys, "--learning_rate", "0.01")  # the rankers' config only
    assert out.count("is up to date") == 1 and trained(out) == 2 and "rebuilding" not in out  # new run dirs
    assert len(os.listdir(world.ranker)) == 4

    out, table3 = _experiment(world, capsys, "--eval_from", "3")  # upstream: the transform, then its rankers
    assert out.count("rebuilding, changed: eval_from 2 -> 3") == 1 and "is up to date" not in out
    assert out.count("ranker run") == 2 and trained(out) == 2
    assert "mean over the evaluation days 3-3" in table3

    assert cli.main(["experiment", "--run_dir", world.root, "--arms", "sid_ngram:2", "--baseline", "sid_ngram:2",
                     "--if_changed", "refuse", *IN_MEMORY]) == 2
    assert "eval_from 3 -> 2" in capsys.readouterr().err


def test_experiment_arms_are_parsed_and_refused_clearly():
    arms = experiment.parse_arms("random_hash:8192, dense:1.5,sid_ngram:2,sid_spm:300")
    assert [a.representation for a in arms] == ["random_hash_8192", "dense", "sid_2gram", "sid_spm_300"]
    assert arms[1].depth_multiplier == 1.5 and arms[1].history_settings() == (False,)
    for bad, message in (("hashing:8", "kind must be one of"), ("sid_spm:big", "must be a number"), ("", "no arms")):
        with pytest.raises(ValueError, match=message):
            experiment.parse_arms(bad)


def _run_small(run_dir, capsys, arms: str, *flags) -> tuple[str, dict]:
    """`sidrec experiment` with a tiny ranker on the small world: (what it printed, experiment.json)."""
    argv = ["experiment", "--run_dir", run_dir.root, "--arms", arms, "--batch_size", "256", "--hidden_dims", "16",
            "--embedding_dim", "8", *IN_MEMORY, *flags]
    assert cli.main(argv) == 0
    with open(os.path.join(run_dir.metrics, "experiment.json")) as f:
        return capsys.readouterr().out, json.load(f)


def test_matched_table_sizes_by_hand():
    # The demo's L=4, K=256: unigram 4 x 256, bigram 2 x 256^2, their geometric mean, twice bigram.
    assert experiment.matched_table_sizes(4, 256) == [1024, 11585, 131072, 262144]
    arms = experiment.parse_arms(experiment.matched_arms(4, 16))
    assert [a.representation for a in arms][:5] == ["dense", "dense", "dense", "sid_1gram", "sid_2gram"]
    assert [a.buckets for a in arms if a.kind == "random_hash"] == [64, 181, 512, 1024]
    assert [a.vocab_size for a in arms if a.kind == "sid_spm"] == [64, 181, 512, 1024]
    assert experiment.baseline_arm(arms).buckets == 64
    with pytest.raises(ValueError, match="odd"):
        experiment.matched_table_sizes(3, 16)


def test_an_spm_size_the_data_cannot_support_falls_back_to_the_largest_that_works(run_dir, capsys):
    out, results = _run_small(run_dir, capsys, "random_hash:8192,sid_spm:100000")
    assert "sid_spm_100000: vocab_size 100000 is more than" in out
    used = results["substituted"]["sid_spm_100000"]
    assert used.startswith("sid_spm_") and int(used.rsplit("_", 1)[1]) < 100000
    assert {r["representation"] for r in results["runs"]} == {"random_hash_8192", used}
