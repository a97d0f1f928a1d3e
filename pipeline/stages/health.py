"""`sidrec health`: a lineage's health over its daily steps (pipeline.sid.sid_health), as a table and a figure.

Every ranker run of RUN with daily records (RUN/ranker/<run>/daily/day=NNNN.json) gets its trend: the day's
cold-start share, new items, their full-SID collision rate against the lineage's, their first-level code
spread against a same-size draw of the lineage's items, CTR/1D AUC, and what tripped.
"""

import os

from pipeline.core import files
from pipeline.core.layout import RankerLayout, RunLayout
from pipeline.stages import plots


def runs_with_steps(layout: RunLayout) -> dict[str, list[dict]]:
    """{run directory: its daily records, by day} for every ranker run of the layout that took daily steps."""
    out = {}
    for run_dir in sorted(files.glob(os.path.join(layout.ranker, "*"))):
        steps = sorted(files.glob(os.path.join(RankerLayout(run_dir).root, "daily", "day=*.json")))
        if steps:
            out[run_dir] = [files.read_json(path) for path in steps]
    return out


def run(layout: RunLayout) -> dict:
    """The trend of every run with daily steps, and a figure of each at RUN/report/health_<run>.png.

    Raises:
      FileNotFoundError: no run of RUN took a daily step.
    """
    runs = runs_with_steps(layout)
    if not runs:
        raise FileNotFoundError(f"{layout.ranker}: no ranker run with daily steps; take some with `sidrec daily`")
    result = {"runs": []}
    for run_dir, steps in runs.items():
        name = os.path.basename(run_dir)
        plot = plots.health([s for s in steps if "health" in s], files.join(layout.report, f"health_{name}.png"))
        result["runs"].append({"run": run_dir, "steps": steps, "plot": plot})
    return result


def _cell(value, fmt: str) -> str:
    return "n/a" if value is None or value != value else format(value, fmt)  # NaN: e.g. no new item impressed


def describe(result: dict) -> str:
    lines = []
    for entry in result["runs"]:
        lines.append(f"== {entry['run']}")
        lines.append(f"{'day':>4} {'cold-start share':>16} {'new items':>9} {'SID collisions (lineage)':>24} "
                     f"{'level-1 spread':>14} {'untrained pieces (new)':>22} {'CTR/1D AUC':>10}  advice")
        for step in entry["steps"]:
            h = step.get("health")
            if h is None:  # a step recorded before health was kept
                lines.append(f"{step['day']:>4} (no health recorded)")
                continue
            collisions = ("n/a" if "collision_rate" not in h
                          else f"{h['collision_rate']:.1%} ({h['lineage_collision_rate']:.1%})")
            spread = _cell(h.get("perplexity_ratio", [None])[0], ".2f")
            untrained = ("n/a" if "untrained_piece_share" not in h
                         else f"{h['untrained_piece_share']:.1%} ({_cell(h['untrained_piece_share_new'], '.1%')})")
            advice = "refresh advised: " + "; ".join(h["tripped"]) if h["tripped"] else "ok"
            lines.append(f"{step['day']:>4} {h['cold_start_share']:>16.1%} {h['new_items']:>9,} {collisions:>24} "
                         f"{spread:>14} {untrained:>22} {_cell(h['ctr_1d_auc'], '.4f'):>10}  {advice}")
        lines.append(f"figure: {entry['plot']}")
    return "\n".join(lines)
