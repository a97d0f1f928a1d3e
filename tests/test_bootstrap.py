"""The bootstrap over users and seeds on kept predictions written by hand."""

import os

import numpy as np
import pytest

from pipeline.core.layout import RankerLayout
from pipeline.core.metrics import binary_auc
from pipeline.stages import bootstrap

DAYS = [3, 4]


def _keep(run_dir, rng, noise):
    """Two evaluation days of 40 impressions by 8 users; scores follow the clicks, blurred by `noise`."""
    for day in DAYS:
        click = rng.integers(0, 2, 40)
        path = RankerLayout(run_dir).predictions(day)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        score = click + noise * rng.normal(size=40)
        np.savez(path, click=click, click_probability=1.0 / (1.0 + np.exp(-score)),  # probabilities, same order
                 cold_start=np.arange(40) % 4 == 0, user_key=np.arange(40) % 8 + 1000)


def _runs(tmp_path, noises):
    runs = []
    for label, noise_by_seed, baseline in (("base", noises[0], True), ("arm", noises[1], False)):
        for seed, noise in enumerate(noise_by_seed):
            run_dir = str(tmp_path / f"{label}-{seed}")
            _keep(run_dir, np.random.default_rng(seed), noise)  # same clicks per seed: the same impressions
            with np.load(RankerLayout(run_dir).predictions(DAYS[0])) as a, \
                    np.load(RankerLayout(run_dir).predictions(DAYS[1])) as b:
                auc = np.mean([binary_auc(k["click"], k["click_probability"]) for k in (a, b)])
                auc_1d = np.mean([binary_auc(k["click"][k["cold_start"]], k["click_probability"][k["cold_start"]])
                                  for k in (a, b)])
            runs.append({"label": label, "use_history": True, "seed": seed, "is_baseline": baseline,
                         "run_dir": run_dir, "ctr_auc": auc, "ctr_1d_auc": auc_1d})
    return runs


def _rows(runs):
    def row(label, baseline):
        cells = {key: {"mean": 0.5, "ci95_low": 0.0, "ci95_high": 1.0, "n": 2} for key in
                 ("ctr_auc", "ctr_1d_auc", "ctr_auc_change_pct", "ctr_1d_auc_change_pct")}
        return {"label": label, "use_history": True, "is_baseline": baseline, **cells}
    return [row("base", True), row("arm", False)]


def test_an_arm_identical_to_its_baseline_changes_by_exactly_zero(tmp_path):
    runs = _runs(tmp_path, [(0.5, 0.5), (0.5, 0.5)])
    rows = bootstrap.with_user_bootstrap(_rows(runs), runs, DAYS, replicates=30)
    change = rows[1]["ctr_auc_change_pct"]
    assert change["ci95_low"] == change["ci95_high"] == 0.0 and change["replicates"] == 30


def test_intervals_cover_the_data_noise_and_keep_the_point_estimate(tmp_path):
    runs = _runs(tmp_path, [(2.0, 2.0), (0.6, 0.7)])  # the arm's scores are much sharper
    rows = bootstrap.with_user_bootstrap(_rows(runs), runs, DAYS, replicates=100)
    arm = rows[1]
    assert arm["ctr_auc"]["mean"] == 0.5  # the point estimate is left as it was
    assert 0.0 < arm["ctr_auc_change_pct"]["ci95_low"] < arm["ctr_auc_change_pct"]["ci95_high"]
    assert 0.5 < arm["ctr_auc"]["ci95_low"] < arm["ctr_auc"]["ci95_high"] < 1.0
    again = bootstrap.with_user_bootstrap(_rows(runs), runs, DAYS, replicates=100)
    assert again == rows  # the same replicates: deterministic


def _auc_by_pairs(click, score, weight) -> float:
    """Weighted AUC from every (positive, negative) pair: weight product, ties count one half."""
    pos = [(s, w) for c, s, w in zip(click, score, weight) if c == 1]
    neg = [(s, w) for c, s, w in zip(click, score, weight) if c == 0]
    total = sum(w for _, w in pos) * sum(w for _, w in neg)
    if not total:
        return float("nan")
    return sum(wp * wn * (1.0 if sp > sn else 0.5 if sp == sn else 0.0) for sp, wp in pos for sn, wn in neg) / total


def _replicates_by_hand(runs, replicates, seed=0):
    """The bootstrap as its docstring states it, written out: per replicate, Poisson(1) user weights, then
    the seeds drawn with replacement; each arm's mean over drawn seeds of its mean daily weighted AUC."""
    kept = {}
    for r in runs:
        kept[r["run_dir"]] = []
        for day in DAYS:
            with np.load(RankerLayout(r["run_dir"]).predictions(day)) as k:
                kept[r["run_dir"]].append({key: k[key] for key in k.files})
    users = np.unique(np.concatenate([d["user_key"] for days in kept.values() for d in days]))
    seeds = sorted({r["seed"] for r in runs})
    run_of = {(r["label"], r["seed"]): r["run_dir"] for r in runs}
    rng = np.random.default_rng(seed)
    out = {"arm": [], "change": [], "base_against_arm": []}
    for _ in range(replicates):
        weights = dict(zip(users, rng.poisson(1.0, users.size).astype(float)))
        drawn = rng.choice(seeds, size=len(seeds), replace=True)

        def auc(run_dir):
            days = [_auc_by_pairs(d["click"], d["click_probability"], [weights[u] for u in d["user_key"]])
                    for d in kept[run_dir]]
            days = [a for a in days if np.isfinite(a)]
            return np.mean(days) if days else float("nan")

        arm = [auc(run_of[("arm", s)]) for s in drawn]
        base = [auc(run_of[("base", s)]) for s in drawn]
        out["arm"].append(np.mean(arm))
        out["change"].append(np.mean([100.0 * (a / b - 1.0) for a, b in zip(arm, base)]))
        out["base_against_arm"].append(np.mean([100.0 * (b / a - 1.0) for a, b in zip(arm, base)]))
    return {key: np.percentile(np.asarray(v)[np.isfinite(v)], [2.5, 97.5]) for key, v in out.items()}


def test_the_interval_equals_the_bootstrap_worked_out_pair_by_pair(tmp_path):
    runs = _runs(tmp_path, [(1.0, 1.5), (0.6, 0.9)])
    arm = bootstrap.with_user_bootstrap(_rows(runs), runs, DAYS, replicates=40)[1]
    expected = _replicates_by_hand(runs, 40)
    assert [arm["ctr_auc"]["ci95_low"], arm["ctr_auc"]["ci95_high"]] == pytest.approx(expected["arm"], abs=1e-12)
    assert [arm["ctr_auc_change_pct"]["ci95_low"], arm["ctr_auc_change_pct"]["ci95_high"]] == pytest.approx(
        expected["change"], abs=1e-9)


def test_users_are_resampled_so_one_seed_still_has_an_interval(tmp_path):
    """With one seed the seed draws cannot vary: all the width comes from resampling the users."""
    runs = _runs(tmp_path, [(1.0,), (0.6,)])
    arm = bootstrap.with_user_bootstrap(_rows(runs), runs, DAYS, replicates=100)[1]
    # 0.83-0.96 and +8.9% to +20.1% here; with every user weighted 1 both would have zero width.
    assert arm["ctr_auc"]["ci95_high"] - arm["ctr_auc"]["ci95_low"] > 0.05
    assert arm["ctr_auc_change_pct"]["ci95_high"] - arm["ctr_auc_change_pct"]["ci95_low"] > 5.0


def test_a_pair_of_arms_gets_its_paired_change_from_the_same_replicates(tmp_path):
    """F2 and F4 compare two arms, neither the baseline: `against` gives that change the users' noise too."""
    runs = _runs(tmp_path, [(1.0, 1.5), (0.6, 0.9)])
    base, arm = bootstrap.with_user_bootstrap(_rows(runs), runs, DAYS, replicates=40, against=(("base", "arm"),))
    assert "against" not in arm
    cell = base["against"]["arm"]["ctr_auc_change_pct"]
    assert [cell["ci95_low"], cell["ci95_high"]] == pytest.approx(_replicates_by_hand(runs, 40)["base_against_arm"],
                                                                  abs=1e-9)
    by_seed = {(r["label"], r["seed"]): r["ctr_auc"] for r in runs}
    assert cell["mean"] == pytest.approx(np.mean([100.0 * (by_seed["base", s] / by_seed["arm", s] - 1.0)
                                                  for s in (0, 1)]), abs=1e-12)
    assert cell["replicates"] == 40 and cell["n"] == 2


def test_weighted_ne_and_calibration_equal_the_rows_repeated_by_their_weights():
    from pipeline.core.metrics import calibration, normalized_entropy

    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 2, 50), rng.uniform(0.05, 0.95, 50)
    weights = rng.poisson(1.0, 50).astype(np.float64)
    repeated = np.repeat(np.arange(50), weights.astype(int))
    ne, cal = bootstrap._WeightedLogLoss(y, p)(weights)
    assert ne == pytest.approx(normalized_entropy(y[repeated], p[repeated]))
    assert cal == pytest.approx(calibration(y[repeated], p[repeated]))
