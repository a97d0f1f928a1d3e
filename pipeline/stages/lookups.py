"""`sidrec lookups`: embedding lookups per item by popularity bucket (the paper's Figure 4).

For random hashing, every N-gram that divides L, prefix N-grams, and SentencePiece at several table
sizes (plain, with an ID table, and in training with dropout), counted on the training window's
impressions only (pipeline.core.protocol).
"""


import numpy as np

from pipeline.core import files
from pipeline.core.cards import read_sid_stats
from pipeline.core.layout import RunLayout, SidTableLayout
from pipeline.core.protocol import split_days
from pipeline.data import log_io, sid_table_io
from pipeline.sid import lookup_stats
from pipeline.stages import plots
from pipeline.stages.configs import LookupsConfig  # noqa: F401  (re-exported)

BUCKETS = ("head", "torso", "tail")


def run(layout: RunLayout, config: LookupsConfig) -> dict:
    """Counts lookups per item; writes RUN/metrics/lookups.json and a plot. Returns {"rows", "path", "plot"}."""
    sids_dir = SidTableLayout(config.sids or layout.sids)
    train_days = split_days(layout.data.logged_days(), config.eval_from).train_window
    table = sid_table_io.read_sid_table(sids_dir.table).lookup()
    codebook_size = read_sid_stats(sids_dir.root)["codebook_size"]
    logs = log_io.read_logs(layout.data, days=train_days)
    items, impressions = np.unique(logs.candidate_item_id, return_counts=True)
    known = np.array([i in table for i in items])
    rows = lookup_stats.sweep(impressions[known], np.stack([table[i] for i in items[known]]), codebook_size,
                              config.buckets, list(config.vocab_sizes), config.id_buckets, config.spm_dropout)
    files.write_json(layout.lookups, rows)
    return {"rows": rows, "path": layout.lookups, "plot": plots.lookups(rows, layout.plot("lookups_per_item"))}


def describe(result: dict) -> str:
    """The lookups table, and where it was written."""
    lines = [f"{'representation':>36} {'rows':>10} {'head':>6} {'torso':>6} {'tail':>6}"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"{r['representation']:>36} {r['table_rows']:>10,}  {r['error']}")
        else:
            lines.append(f"{r['representation']:>36} {r['table_rows']:>10,} " + " ".join(
                f"{r[b]['mean_lookups_per_item']:>6.2f}" for b in BUCKETS))
    lines.append(f"lookups: {result['path']}\nplot:    {result['plot']}")
    return "\n".join(lines)
