"""Intervals on real data, where the world cannot be drawn again: a bootstrap over users and seeds.

Each replicate gives every user a Poisson(1) weight (the same weights for every arm, so arms stay
paired) and draws the model seeds with replacement; an arm's statistic is its mean over the drawn
seeds of the mean over the evaluation days of its weighted CTR AUC (and CTR/1D AUC), and its change
against the baseline run of the same seed. The 95% interval is the 2.5th-97.5th percentile over the
replicates, so it covers both the data's noise and the seeds'. The point estimate stays the plain
mean over the seeds, as in `experiment.summarise`.
"""

import numpy as np

from pipeline.core import files
from pipeline.core.layout import RankerLayout
from pipeline.core.metrics import WeightedAUC, rate_entropy, row_log_losses
from pipeline.stages.experiment import CHANGES, SCORES, baseline_for, baseline_runs

KEYS = SCORES


def _kept(run_dir: str, days: list[int]) -> list[dict]:
    """A run's kept predictions per evaluation day (clicks, probabilities, cold-start flags, user keys)."""
    out = []
    for day in days:
        path = RankerLayout(run_dir).predictions(day)
        kept = files.load_npz(path)
        if "user_key" not in kept:
            raise ValueError(f"{path} keeps no user keys (made before they were kept): train the run again")
        out.append({key: kept[key] for key in ("click", "click_probability", "cold_start", "user_key")})
    return out


class _WeightedLogLoss:
    """NE and calibration of fixed predictions under changing per-example weights (metrics.normalized_entropy
    and metrics.calibration with every row counted `weight` times)."""

    def __init__(self, labels: np.ndarray, probabilities: np.ndarray):
        self._y = np.asarray(labels, np.float64)
        self._p = np.asarray(probabilities, np.float64)
        self._loss = row_log_losses(labels, probabilities)

    def __call__(self, weights: np.ndarray) -> tuple[float, float]:
        total, clicks = weights.sum(), (weights * self._y).sum()
        if not 0 < clicks < total:
            return float("nan"), float("nan")
        ne = (weights * self._loss).sum() / total / rate_entropy(clicks / total)
        return float(ne), float((weights * self._p).sum() / clicks)


class _RunScores:
    """One run's evaluation days, ready for weighted metrics: each day's AUCs, log losses and impressions' users."""

    def __init__(self, days: list[dict], users: np.ndarray):
        self.days = []
        for kept in days:
            y, p, cold = kept["click"], kept["click_probability"], kept["cold_start"]
            user = np.searchsorted(users, kept["user_key"])  # index into the replicate's user weights
            self.days.append((WeightedAUC(y, p), WeightedAUC(y[cold], p[cold]) if cold.any() else None,
                              user, user[cold], _WeightedLogLoss(y, p)))

    def metrics(self, user_weights: np.ndarray) -> dict:
        overall = [auc(user_weights[users]) for auc, _, users, _, _ in self.days]
        cold = [auc(user_weights[users]) for _, auc, _, users, _ in self.days if auc is not None]
        ne, calibration = zip(*(loss(user_weights[users]) for _, _, users, _, loss in self.days))
        return {"ctr_auc": _mean(overall), "ctr_1d_auc": _mean(cold), "ctr_ne": _mean(ne),
                "calibration": _mean(calibration)}


def _mean(values: list[float]) -> float:
    """The mean over the days where the AUC is defined (a day's weights can leave one class out)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def with_user_bootstrap(rows: list[dict], runs: list[dict], days: list[int], replicates: int = 200,
                        seed: int = 0, against: tuple[tuple[str, str], ...] = ()) -> list[dict]:
    """`rows` (experiment.summarise) with each AUC's and each change's interval from the bootstrap.

    Args:
      runs: the experiment's runs (each with run_dir, label, use_history, seed, is_baseline).
      days: the evaluation days.
      against: (label, other label) pairs of rows: the row of `label` also gets its paired change against
        the other row from the same replicates, as row["against"][other label][KEY_change_pct].
    """
    kept = {r["run_dir"]: _kept(r["run_dir"], days) for r in runs}
    users = np.unique(np.concatenate([day["user_key"] for run in kept.values() for day in run]))
    scores = {run_dir: _RunScores(run_kept, users) for run_dir, run_kept in kept.items()}
    baselines = baseline_runs(runs)
    seeds = sorted({r["seed"] for r in runs})
    # Per row: its run and its baseline's run of each seed.
    pairs = {(row["label"], row["use_history"]): {
        r["seed"]: (r, baseline_for(baselines, r["use_history"], r["seed"])) for r in runs
        if (r["label"], r["use_history"]) == (row["label"], row["use_history"])} for row in rows}
    draws = {name: {key: [] for key in KEYS + tuple(f"{k}_change_pct" for k in CHANGES)} for name in pairs}
    by_label = {(r["label"], r["seed"]): r["run_dir"] for r in runs}
    compared = tuple(key for key in CHANGES if all(key in r for r in runs))  # (runs from before NE have none)
    against_draws = {pair: {key: [] for key in compared} for pair in against}  # the % change per replicate
    rng = np.random.default_rng(seed)
    for _ in range(replicates):
        weights = rng.poisson(1.0, users.size).astype(np.float64)
        drawn = rng.choice(seeds, size=len(seeds), replace=True)
        metrics = {run_dir: run_scores.metrics(weights) for run_dir, run_scores in scores.items()}
        for name, by_seed in pairs.items():
            for key in KEYS:
                values = [metrics[by_seed[s][0]["run_dir"]][key] for s in drawn]
                base = [metrics[by_seed[s][1]["run_dir"]][key] for s in drawn]
                draws[name][key].append(np.mean(values))
                if key in CHANGES:
                    draws[name][f"{key}_change_pct"].append(
                        np.mean([100.0 * (v / b - 1.0) for v, b in zip(values, base)]))
        for (label, other), pair_draws in against_draws.items():
            for key in compared:
                pair_draws[key].append(np.mean(
                    [100.0 * (metrics[by_label[label, s]][key] / metrics[by_label[other, s]][key] - 1.0) for s in drawn]))
    out = []
    for row in rows:
        row = dict(row)
        for key, replicate_values in draws[(row["label"], row["use_history"])].items():
            row[key] = {**row.get(key, {}), **_percentiles(replicate_values), "n": len(seeds)}
        for (label, other), pair_draws in against_draws.items():
            if label == row["label"]:
                seed_pairs = _paired_runs(runs, label, other)
                row.setdefault("against", {})[other] = {f"{key}_change_pct": {
                    "mean": float(np.mean([100.0 * (run[key] / base[key] - 1.0) for run, base in seed_pairs])),
                    **_percentiles(pair_draws[key]), "n": len(seeds)} for key in compared}
        out.append(row)
    return out


def _percentiles(replicate_values: list[float]) -> dict:
    """The 2.5-97.5 percentile interval of the finite replicate values."""
    values = np.asarray(replicate_values, dtype=np.float64)
    values = values[np.isfinite(values)]
    low, high = np.percentile(values, [2.5, 97.5]) if values.size else (np.nan, np.nan)
    return {"ci95_low": float(low), "ci95_high": float(high), "replicates": int(values.size)}


def _paired_runs(runs: list[dict], label: str, other: str) -> list[tuple[dict, dict]]:
    """(run of `label`, run of `other`) of each seed both have."""
    by_seed = {r["seed"]: r for r in runs if r["label"] == other}
    return [(r, by_seed[r["seed"]]) for r in runs if r["label"] == label and r["seed"] in by_seed]
