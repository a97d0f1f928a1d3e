"""`sidrec study` on a tiny world with two seeds: units, pairing by seed, reuse; and its pieces by hand."""

import os

import pytest

from pipeline.core import fingerprint
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
    by_seed = {r["seed"]: r for r in unit["runs"] if r["label"] == "sid_1gram"}
    assert row["seeds"] == [0, 1]
    assert row["ctr_auc_change_pct"]["mean"] == pytest.approx(
        sum(by_seed[s]["ctr_auc_change_pct"] for s in (0, 1)) / 2)
    assert row["aa_difference"]["impressions"] > 0
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
