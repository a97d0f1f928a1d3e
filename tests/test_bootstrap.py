"""The bootstrap over users and seeds on kept predictions written by hand."""

import os

import numpy as np

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
        np.savez(path, click=click, click_probability=click + noise * rng.normal(size=40),
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
            runs.append({"label": label, "use_history": True, "seed": seed, "is_baseline": baseline,
                         "run_dir": run_dir, "ctr_auc": auc})
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
