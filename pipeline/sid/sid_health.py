"""SID health: signs that a frozen lineage is aging, from each daily step's new items and metrics.

A lineage's RQ-VAE was fitted on the items up to its training window. When new items come from content
regions it never saw, their SIDs crowd into the few codes nearest that region: more of them share a
full SID with another item, and their codes spread over fewer values per level than the same number
of the lineage's own items do. Per daily step (numbers, each against the lineage's):
- cold_start_share: the day's impressions on items first seen that day (their SIDs made that day);
- collision_rate: the share of the day's new items whose full SID another item also has, against the
  same share among the lineage's items;
- perplexity_ratio per level: the perplexity (exp of the entropy) of the new items' codes at that level
  over the mean perplexity of as many items drawn from the lineage's (so the day's count cancels out);
- ctr_1d_drop: the trailing mean of CTR/1D AUC over the previous steps minus the day's.
- untrained_piece_share (and _new, on the new items' impressions): the share of the day's candidate pieces
  whose table rows no training day looked up (pipeline.core.row_lookups, counted by the day loop).
The collision excess and the CTR/1D drop past their thresholds (HealthThresholds) trip, and any tripped
signal advises a refresh. The spread and the untrained pieces are recorded, not tripped on: in the drifting
world (benchmarks/refresh.py) a refreshed lineage's new items spread as narrowly as the aged one's (the new
content is one topic, whichever RQ-VAE codes it), so the spread tells a topic shift, not an aged tokenizer.
"""

import dataclasses

import numpy as np

from pipeline.core.config_flags import flag

# Draws of the lineage's items behind the expected perplexity of a day's new items (a fixed seed: reproducible).
EXPECTED_DRAWS = 20


@dataclasses.dataclass(frozen=True)
class HealthThresholds:
    """When a signal says the lineage is aging (docs/operating.md, "When to refresh")."""

    max_collision_excess: float = flag(0.10, "new items' full-SID collision rate above the lineage's by more than this")
    max_ctr_1d_drop: float = flag(0.03, "CTR/1D AUC below its trailing mean by more than this")
    trailing_steps: int = flag(3, "daily steps in the CTR/1D AUC's trailing mean")
    min_new_items: int = flag(30, "new items a day needs before its SID signals are read (fewer: too noisy)")


def perplexity(codes: np.ndarray) -> float:
    """exp(entropy) of the codes' empirical distribution: the effective number of codes in use."""
    _, counts = np.unique(codes, return_counts=True)
    p = counts / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def shared_sid_rate(sids: np.ndarray, among: np.ndarray) -> float:
    """The share of `sids` rows whose full SID occurs at least twice in `among` (which holds them)."""
    if len(sids) == 0:
        return float("nan")
    _, inverse = np.unique(np.concatenate([among, sids]), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    counts = np.bincount(inverse[:len(among)], minlength=int(inverse.max()) + 1)
    return float((counts[inverse[len(among):]] > 1).mean())


def expected_perplexities(lineage_sids: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Per level: the mean perplexity of `count` items drawn without replacement from the lineage's."""
    rng = np.random.default_rng(seed)
    count = min(count, len(lineage_sids))
    draws = [lineage_sids[rng.choice(len(lineage_sids), count, replace=False)] for _ in range(EXPECTED_DRAWS)]
    return np.array([[perplexity(d[:, level]) for level in range(lineage_sids.shape[1])] for d in draws]).mean(0)


def day_health(new_sids: np.ndarray, lineage_sids: np.ndarray, all_sids: np.ndarray, metrics: dict,
               previous: list[dict], thresholds: HealthThresholds = HealthThresholds()) -> dict:
    """One daily step's signals and what tripped.

    Args:
      new_sids: [n, L] the SIDs made in this step (the day's new items).
      lineage_sids: [N, L] the SIDs of the items the lineage was fitted with.
      all_sids: [M, L] every SID of the table after this step (new ones included).
      metrics: the day's evaluation (examples, cold_start_examples, ctr_1d_auc; the untrained piece shares of a
        representation with a table).
      previous: the health of the earlier steps (their ctr_1d_auc), oldest first.
    """
    health = {"new_items": int(len(new_sids)),
              "cold_start_share": metrics["cold_start_examples"] / max(metrics["examples"], 1),
              "ctr_1d_auc": metrics["ctr_1d_auc"],
              **{k: metrics[k] for k in ("untrained_piece_share", "untrained_piece_share_new") if k in metrics}}
    tripped = []
    if len(new_sids) >= thresholds.min_new_items:
        health["collision_rate"] = shared_sid_rate(new_sids, all_sids)
        health["lineage_collision_rate"] = shared_sid_rate(lineage_sids, lineage_sids)
        expected = expected_perplexities(lineage_sids, len(new_sids))
        health["perplexity_ratio"] = [perplexity(new_sids[:, level]) / expected[level]
                                      for level in range(new_sids.shape[1])]
        excess = health["collision_rate"] - health["lineage_collision_rate"]
        if excess > thresholds.max_collision_excess:
            tripped.append(f"new items' full-SID collision rate {health['collision_rate']:.1%} against the lineage's "
                           f"{health['lineage_collision_rate']:.1%} (more than +{thresholds.max_collision_excess:.0%})")
    trailing = [h["ctr_1d_auc"] for h in previous[-thresholds.trailing_steps:] if np.isfinite(h.get("ctr_1d_auc", np.nan))]
    if len(trailing) == thresholds.trailing_steps and np.isfinite(metrics["ctr_1d_auc"]):
        health["ctr_1d_drop"] = float(np.mean(trailing)) - metrics["ctr_1d_auc"]
        if health["ctr_1d_drop"] > thresholds.max_ctr_1d_drop:
            tripped.append(f"CTR/1D AUC {metrics['ctr_1d_auc']:.4f}, {health['ctr_1d_drop']:.4f} below its mean over "
                           f"the {thresholds.trailing_steps} steps before")
    health["tripped"] = tripped
    health["refresh_advised"] = bool(tripped)
    return health
