"""Per-day summary of impression logs: volume, CTR, cold-start share and the oracle AUC."""

from typing import Iterable

import numpy as np
import pandas as pd

from pipeline.core.records import Corpus, Impressions
from pipeline.core.metrics import binary_auc


def cold_start_mask(impressions: Impressions, corpus: Corpus) -> tuple[np.ndarray, np.ndarray]:
    """Impressions whose candidate was first seen on the impression's day, and unknown candidates.

    Returns:
      (cold-start mask, candidate-not-in-corpus mask), one entry per impression.
    """
    index = pd.Index(corpus.item_ids).get_indexer(impressions.candidate_item_id)
    unknown = index < 0
    first_day = np.where(unknown, -1, corpus.first_day[np.maximum(index, 0)])
    return (first_day == impressions.day) & ~unknown, unknown


def summarise(impressions: Impressions, corpus: Corpus) -> dict:
    """Summary per day; the oracle AUC (AUC of the true click probability) needs `true_ctr`."""
    return summarise_parts([impressions], corpus)


def summarise_parts(parts: Iterable[Impressions], corpus: Corpus) -> dict:
    """`summarise` over impressions that arrive in parts (a day at a time), holding one part at a time."""
    per_day, users, total = [], set(), 0
    for impressions in parts:
        per_day += _per_day(impressions, corpus)
        users.update(np.unique(impressions.user_id).tolist())
        total += impressions.size
    return {
        "items": corpus.size,
        "embedding_dim": corpus.dim,
        "new_items_per_day": {int(d): int(c) for d, c in zip(*np.unique(corpus.first_day, return_counts=True))},
        "users": len(users),
        "impressions": total,
        "days": len(per_day),
        "per_day": sorted(per_day, key=lambda entry: entry["day"]),
    }


def _per_day(impressions: Impressions, corpus: Corpus) -> list[dict]:
    cold, unknown = cold_start_mask(impressions, corpus)
    per_day = []
    for day in np.unique(impressions.day):
        rows = impressions.day == day
        click = impressions.click[rows]
        entry = {
            "day": int(day),
            "impressions": int(rows.sum()),
            "ctr": float(click.mean()),
            "cold_start_share": float(cold[rows].mean()),
            "unknown_candidates": int(unknown[rows].sum()),
        }
        if impressions.true_ctr is not None:
            truth = impressions.true_ctr[rows]
            entry["oracle_auc"] = binary_auc(click, truth)
            entry["oracle_auc_cold_start"] = binary_auc(click[cold[rows]], truth[cold[rows]])
        per_day.append(entry)
    return per_day


def format_summary(summary: dict) -> str:
    """A printable table: one line per day, then the totals."""
    has_oracle = bool(summary["per_day"]) and "oracle_auc" in summary["per_day"][0]
    header = f"{'day':>5} {'impressions':>11} {'CTR':>7} {'cold-start':>10}"
    if has_oracle:
        header += f" {'oracle AUC':>10} {'oracle AUC cold':>15}"
    lines = [header]
    for d in summary["per_day"]:
        line = f"{d['day']:>5} {d['impressions']:>11,} {d['ctr']:>7.4f} {d['cold_start_share']:>10.2%}"
        if has_oracle:
            line += f" {d['oracle_auc']:>10.4f} {d['oracle_auc_cold_start']:>15.4f}"
        lines.append(line)
    per_day = summary["impressions"] / max(summary["days"], 1)
    lines.append(f"{summary['items']:,} items (D={summary['embedding_dim']}), {summary['users']:,} users, "
                 f"{summary['days']} days, {summary['impressions']:,} impressions ({per_day:,.0f} a day)")
    return "\n".join(lines)
