"""Intervals on real data, where the world cannot be drawn again: a bootstrap over users and seeds.

Each replicate gives every user a Poisson(1) weight (the same weights for every arm, so arms stay
paired) and draws the model seeds with replacement; an arm's statistic is its mean over the drawn
seeds of the mean over the evaluation days of its weighted CTR AUC (and CTR/1D AUC), and its change
against the baseline run of the same seed. The 95% interval is the 2.5th-97.5th percentile over the
replicates, so it covers both the data's noise and the seeds'. The point estimate stays the plain
mean over the seeds, as in `experiment.summarise`.
"""

import numpy as np

from pipeline.core.layout import RankerLayout
from pipeline.core.metrics import WeightedAUC

KEYS = ("ctr_auc", "ctr_1d_auc")


class _RunScores:
    """One run's kept predictions per evaluation day, ready for weighted AUCs."""

    def __init__(self, run_dir: str, days: list[int], user_index: dict):
        self.days = []
        for day in days:
            with np.load(RankerLayout(run_dir).predictions(day)) as kept:
                y, p, cold = kept["click"], kept["click_probability"], kept["cold_start"]
                users = np.array([user_index[u] for u in kept["user_key"].tolist()])
            self.days.append((WeightedAUC(y, p), WeightedAUC(y[cold], p[cold]) if cold.any() else None,
                              users, users[cold]))

    def metrics(self, user_weights: np.ndarray) -> dict:
        overall = [auc(user_weights[users]) for auc, _, users, _ in self.days]
        cold = [auc(user_weights[users]) for _, auc, _, users in self.days if auc is not None]
        return {"ctr_auc": _mean(overall), "ctr_1d_auc": _mean(cold)}


def _mean(values: list[float]) -> float:
    """The mean over the days where the AUC is defined (a day's weights can leave one class out)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def _user_keys(run_dirs: list[str], days: list[int]) -> dict:
    keys = set()
    for run_dir in run_dirs:
        for day in days:
            path = RankerLayout(run_dir).predictions(day)
            with np.load(path) as kept:
                if "user_key" not in kept:
                    raise ValueError(f"{path} keeps no user keys (made before they were kept): train the run again")
                keys.update(kept["user_key"].tolist())
    return {key: i for i, key in enumerate(sorted(keys))}


def with_user_bootstrap(rows: list[dict], runs: list[dict], days: list[int], replicates: int = 200,
                        seed: int = 0) -> list[dict]:
    """`rows` (experiment.summarise) with each AUC's and each change's interval from the bootstrap.

    Args:
      runs: the experiment's runs (each with run_dir, label, use_history, seed, is_baseline).
      days: the evaluation days.
    """
    user_index = _user_keys([r["run_dir"] for r in runs], days)
    scores = {r["run_dir"]: _RunScores(r["run_dir"], days, user_index) for r in runs}
    baselines = {(r["use_history"], r["seed"]): r for r in runs if r["is_baseline"]}
    seeds = sorted({r["seed"] for r in runs})
    rng = np.random.default_rng(seed)
    draws = {key: {row["label"] + str(row["use_history"]): [] for row in rows}
             for key in KEYS + tuple(f"{k}_change_pct" for k in KEYS)}
    for _ in range(replicates):
        weights = rng.poisson(1.0, len(user_index)).astype(np.float64)
        drawn = rng.choice(seeds, size=len(seeds), replace=True)
        cache = {}

        def metrics(run):
            if run["run_dir"] not in cache:
                cache[run["run_dir"]] = scores[run["run_dir"]].metrics(weights)
            return cache[run["run_dir"]]

        for row in rows:
            by_seed = {r["seed"]: r for r in runs if r["label"] == row["label"] and r["use_history"] == row["use_history"]}
            name = row["label"] + str(row["use_history"])
            for key in KEYS:
                values = [metrics(by_seed[s])[key] for s in drawn]
                base = [metrics(_baseline(baselines, row["use_history"], s))[key] for s in drawn]
                draws[key][name].append(np.mean(values))
                draws[f"{key}_change_pct"][name].append(np.mean([100.0 * (v / b - 1.0) for v, b in zip(values, base)]))
    out = []
    for row in rows:
        row = dict(row)
        name = row["label"] + str(row["use_history"])
        for key, per_row in draws.items():
            values = np.asarray(per_row[name], dtype=np.float64)
            values = values[np.isfinite(values)]
            low, high = np.percentile(values, [2.5, 97.5]) if values.size else (np.nan, np.nan)
            row[key] = {**row[key], "ci95_low": float(low), "ci95_high": float(high), "n": len(seeds),
                        "replicates": int(values.size)}
        out.append(row)
    return out


def _baseline(baselines: dict, use_history: bool, seed: int) -> dict:
    """The baseline run of the same setting and seed (a dense baseline has only the setting without history)."""
    return baselines.get((use_history, seed)) or next(b for (_, s), b in baselines.items() if s == seed)
