"""`sidrec study` on a tiny world with two seeds: units, pairing by seed, reuse; and its pieces by hand."""

import json
import os

import numpy as np
import pytest

from pipeline.core import fingerprint
from pipeline.core.layout import RankerLayout
from pipeline.stages import day_loop, experiment, study
from worlds import IN_MEMORY, TINY

TINY_RANKER = day_loop.TrainConfig(batch_size=256, hidden_dims=(16,), embedding_dim=8)


def _config(**overrides):
    return study.StudyConfig(**{"arms": "random_hash:8192,sid_ngram:1", "worlds": ("balanced",), "seeds": 2,
                                "matched_world": "", "num_items": 1500, "num_users": 200, "num_days": 3,
                                "impressions_per_day": 1500, "content_dim": 32, "movielens_dir": study.SKIP,
                                **overrides})


def test_a_study_pairs_world_and_model_seeds_and_reuses_every_unit(tmp_path):
    layout = study.StudyLayout(str(tmp_path / "study"))
    logs = []
    results = study.run(layout, _config(), TINY, TINY_RANKER, IN_MEMORY, log=logs.append)
    [unit] = results["units"]
    assert unit["name"] == "balanced" and unit["kind"] == "simulator" and unit["balance"] == 0.5
    # Seed s: world s with model s; world 0 also trained model 1 (the A/A pair), kept out of the intervals.
    assert sorted({(os.path.dirname(os.path.dirname(r["run_dir"])), r["seed"]) for r in unit["runs"]}) == [
        (layout.world("balanced", 0).root, 0), (layout.world("balanced", 1).root, 1)]
    [row] = [r for r in unit["rows"] if r["label"] == "sid_1gram"]
    assert row["seeds"] == [0, 1]
    # The change, from each run's own metrics.jsonl: seed s's arm against seed s's baseline, both of world s.
    changes = []
    for seed in (0, 1):
        arm, base = (_run(unit["runs"], label, seed) for label in ("sid_1gram", "random_hash_8192"))
        assert _world_of(arm) == _world_of(base) == layout.world("balanced", seed).root
        changes.append(100.0 * (_mean_ctr_auc(arm) / _mean_ctr_auc(base) - 1.0))
    assert row["ctr_auc_change_pct"]["mean"] == pytest.approx(sum(changes) / 2, abs=1e-9)
    # The A/A pair is world 0's two model seeds, on the same impressions: worked out from their predictions.
    with open(layout.world("balanced", 0).experiment) as f:
        world0 = json.load(f)["runs"]
    pair = [_run(world0, "sid_1gram", seed) for seed in (0, 1)]
    assert {_world_of(r) for r in pair} == {layout.world("balanced", 0).root}
    differences = []
    for day in unit["days"]:
        a, b = (np.load(RankerLayout(r).predictions(day)) for r in pair)
        assert np.array_equal(a["click"], b["click"]) and np.array_equal(a["user_key"], b["user_key"])
        differences.append(np.abs(a["click_probability"] - b["click_probability"]))
    differences = np.concatenate(differences)
    assert row["aa_difference"]["impressions"] == differences.size
    assert row["aa_difference"]["overall"] == pytest.approx(differences.mean(), rel=1e-9) and differences.mean() > 0
    assert unit["lookups"] and unit["sid_quality"]["num_levels"] == TINY.num_levels
    assert os.path.exists(results["path"])

    # A rerun recomputes nothing: the set-up is skipped, each run's fingerprint is the one it had.
    before = {r["run_dir"]: fingerprint.read(r["run_dir"])["fingerprint"] for r in unit["runs"]}
    stamps = {d: os.path.getmtime(os.path.join(d, "metrics.jsonl")) for d in before}
    logs.clear()
    again = study.run(layout, _config(), TINY, TINY_RANKER, IN_MEMORY, log=logs.append)
    assert sum("data, RQ-VAE and SIDs reused" in line for line in logs) == 2
    assert {d: os.path.getmtime(os.path.join(d, "metrics.jsonl")) for d in before} == stamps
    assert again["units"][0]["rows"] == unit["rows"] and again["fingerprint"] == results["fingerprint"]


def _run(runs: list[dict], label: str, seed: int) -> str:
    [run] = [r["run_dir"] for r in runs if r["label"] == label and r["use_history"] and r["seed"] == seed]
    return run


def _world_of(run_dir: str) -> str:
    return os.path.dirname(os.path.dirname(run_dir))


def _mean_ctr_auc(run_dir: str) -> float:
    with open(RankerLayout(run_dir).metrics) as f:
        return float(np.mean([json.loads(line)["ctr_auc"] for line in f]))


def test_runs_of_stand_in_vocabularies_line_up_under_the_requested_name():
    runs = [{"label": "sid_spm_4849_no_history", "arm": "sid_spm_4849", "representation": "sid_spm_4849", "seed": 0},
            {"label": "sid_1gram", "arm": "sid_1gram", "representation": "sid_1gram", "seed": 0}]
    named = experiment.by_requested_name(runs, {"sid_spm_8192": "sid_spm_4849", "sid_spm_11585": "sid_spm_4849"})
    assert [(r["label"], r.get("ran_as")) for r in named] == [
        ("sid_spm_8192_no_history", "sid_spm_4849"), ("sid_spm_11585_no_history", "sid_spm_4849"),
        ("sid_1gram", None)]


def test_f7_pairs_v1_with_v0_by_arm_setting_and_seed():
    def run(label, seed, auc, auc_1d):
        return {"label": label, "use_history": True, "seed": seed, "ctr_auc": auc, "ctr_1d_auc": auc_1d}

    v0 = [run("sid_2gram", 0, 0.70, 0.60), run("sid_2gram", 1, 0.80, 0.50), run("random_hash_8192", 0, 0.6, 0.5)]
    v1 = [run("sid_2gram", 0, 0.77, 0.60), run("sid_2gram", 1, 0.80, 0.55)]
    [row] = study.f7_comparison(v0, v1)
    assert row["label"] == "sid_2gram" and row["seeds"] == [0, 1]
    assert row["ctr_auc_change_pct"]["mean"] == pytest.approx((10.0 + 0.0) / 2)
    assert row["ctr_1d_auc_change_pct"]["mean"] == pytest.approx((0.0 + 10.0) / 2)
    assert row["v0_ctr_auc"]["mean"] == pytest.approx(0.75) and row["v1_ctr_auc"]["mean"] == pytest.approx(0.785)


def test_study_flags_are_checked():
    with pytest.raises(ValueError, match="--seeds must be >= 2"):
        _config(seeds=1)
    with pytest.raises(ValueError, match="is not one of --worlds"):
        _config(matched_world="content")


def test_one_draw_of_a_world_trains_model_seeds_on_it_and_bootstraps_over_users(tmp_path):
    layout = study.StudyLayout(str(tmp_path / "study"))
    config = _config(world_draws="once", history="with")
    [unit] = study.run(layout, config, TINY, TINY_RANKER, IN_MEMORY, log=lambda *_: None)["units"]
    assert unit["name"] == "balanced_1k" and unit["kind"] == "simulator" and unit["oracle"]
    # One world (seed 0), model seeds 0 and 1 on it; only the with-history runs.
    assert not os.path.exists(layout.world("balanced", 1).root)
    assert sorted((_world_of(r["run_dir"]), r["seed"], r["use_history"]) for r in unit["runs"]) == [
        (layout.world("balanced", 0).root, seed, True) for seed in (0, 0, 1, 1)]
    [row] = [r for r in unit["rows"] if r["label"] == "sid_1gram"]
    changes = [100.0 * (_mean_ctr_auc(_run(unit["runs"], "sid_1gram", s)) /
                        _mean_ctr_auc(_run(unit["runs"], "random_hash_8192", s)) - 1.0) for s in (0, 1)]
    cell = row["ctr_auc_change_pct"]
    assert cell["mean"] == pytest.approx(sum(changes) / 2, abs=1e-9)
    # The interval is the bootstrap's over users and seeds, not a t interval over two seeds.
    assert "bootstrap over users" in unit["interval"] and cell["replicates"] > 0
    assert cell["ci95_low"] <= cell["ci95_high"]


def test_a_preset_sets_the_study_defaults_and_flags_beside_it_win():
    from pipeline import cli

    args = cli.build_parser(study_preset="f4_at_scale").parse_known_args(
        ["study", "--preset", "f4_at_scale", "--seeds", "2"])[0]
    assert args.seeds == 2 and args.world_draws == "once" and args.num_items == 100_000
    assert "sid_spm:131072" in args.arms
    with pytest.raises(ValueError, match="--world_draws per_seed"):
        _config(world_draws="once", matched_world="balanced")
    with pytest.raises(ValueError, match="--history must be one of"):
        _config(history="sometimes")
