"""A million items through the daily loop on this machine: each stage's time, peak memory and rate.

The world: 1,000,000 items, 200,000 users, 10 days of 1,000,000 impressions, D=256, simulated once into
ROOT/source. The lineage is fitted on days 1-5 as an operator fits it (docs/operating.md): the RQ-VAE on the
items seen by day 5, their SIDs, and the transform with SentencePiece at 131,072 pieces (days 1-4 its
training window, day 5 its first evaluation day). Then `sidrec daily` publishes version 1 (trained through
day 5) and takes days 6-10 as they land: before each step the day's logs are copied in and the corpus gains
the items first seen that day (not timed). Every stage is the `sidrec` command in its own process, so its
wall time and peak resident memory are its own (benchmarks/scale.py's run_stage).

Targets: the lineage fit <= 30 min; each daily step <= 3 min and <= 6 GiB; step day 10 / step day 6 <= 1.2
in time and in memory.

Stages that finished are recorded in ROOT/stages.jsonl; a rerun with --resume_from STAGE keeps the
records (and outputs) of the stages before it and runs the rest again.

  python benchmarks/million.py --root /work/bench/million --out benchmarks/results/million.json   # ~1 h
  python benchmarks/million.py --root /work/bench/million --resume_from transform --out ...
  python benchmarks/million.py --items 100000 --impressions_per_day 100000 --users 20000 --root /tmp/m  # 10x smaller
"""

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks.common import emit  # noqa: E402
from benchmarks.scale import run_stage  # noqa: E402
from pipeline.core.layout import RunLayout  # noqa: E402

DAYS, FIRST_STEP_DAY = 10, 5
FIT_STAGES = ["train_rqvae", "materialize", "transform", "first_step"]
VOCAB = 131_072
TARGETS = {"lineage_fit_seconds": 30 * 60, "step_seconds": 3 * 60, "step_peak_rss_gib": 6.0,
           "step_growth": 1.2}


def _land(source: RunLayout, layout: RunLayout, corpus, day: int) -> int:
    """Day `day` arrives: its logs, and the corpus of the items first seen by then; returns the corpus size."""
    if not os.path.isdir(layout.data.day_dir(day)):
        shutil.copytree(source.data.day_dir(day), layout.data.day_dir(day))
    seen = corpus.filter(pc.less_equal(corpus.column("first_day"), day))
    os.makedirs(os.path.dirname(layout.data.corpus), exist_ok=True)
    pq.write_table(seen, layout.data.corpus + ".tmp")
    os.replace(layout.data.corpus + ".tmp", layout.data.corpus)
    return seen.num_rows


def _row(stage: str, seconds: float, gib: float, units: int, unit: str) -> dict:
    return {"stage": stage, "seconds": round(seconds, 1), "peak_rss_gib": round(gib, 2), "units": units,
            "unit": unit, "units_per_s": round(units / seconds)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.join("runs", "million"), help="run directories and stage logs")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--impressions_per_day", type=int, default=1_000_000)
    parser.add_argument("--rqvae_epochs", type=int, default=20)
    parser.add_argument("--vocab_size", type=int, default=VOCAB)
    parser.add_argument("--resume_from", default="", choices=["", *FIT_STAGES],
                        help="keep the recorded stages before this one (their outputs too) and run the rest")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    root = os.path.abspath(args.root)
    source, layout = RunLayout(os.path.join(root, "source")), RunLayout(os.path.join(root, "live"))
    logs, record = os.path.join(root, "logs"), os.path.join(root, "stages.jsonl")
    os.makedirs(logs, exist_ok=True)
    kept = {}
    if args.resume_from and os.path.exists(record):
        with open(record) as f:
            done = {row["stage"]: row for row in map(json.loads, f)}
        kept = {name: done[name] for name in FIT_STAGES[:FIT_STAGES.index(args.resume_from)]}
    rows = list(kept.values())
    with open(record, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)

    def stage(name: str, command: list[str], run_dir: str, units: int, unit: str) -> dict:
        if name in kept:
            return kept[name]
        print(f"{name} ...", file=sys.stderr, flush=True)
        seconds, gib = run_stage(command, run_dir, os.path.join(logs, f"{name}.log"))
        rows.append(_row(name, seconds, gib, units, unit))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        with open(record, "a") as f:
            f.write(json.dumps(rows[-1]) + "\n")
        return rows[-1]

    world = {"num_items": args.items, "num_users": args.users, "num_days": DAYS,
             "impressions_per_day": args.impressions_per_day}
    if not os.path.exists(source.data.summary):
        stage("simulate", ["simulate", *(f"--{k}={v}" for k, v in world.items())], source.root,
              DAYS * args.impressions_per_day, "impressions")
    if args.resume_from:  # the kept stages' outputs stay; what the others made goes
        for stage_name, path in (("materialize", layout.sids), ("transform", layout.transform),
                                 ("first_step", layout.ranker), ("first_step", os.path.dirname(layout.serving("ranker")))):
            if stage_name not in kept:
                shutil.rmtree(path, ignore_errors=True)
        for day in range(FIRST_STEP_DAY + 1, DAYS + 1):
            shutil.rmtree(layout.data.day_dir(day), ignore_errors=True)
    else:
        shutil.rmtree(layout.root, ignore_errors=True)
    corpus = pq.read_table(source.data.corpus)
    for day in range(1, FIRST_STEP_DAY + 1):
        items = _land(source, layout, corpus, day)
    window = FIRST_STEP_DAY * args.impressions_per_day
    fit = [stage("train_rqvae", ["train-rqvae", f"--max_epochs={args.rqvae_epochs}"], layout.root, items, "items"),
           stage("materialize", ["materialize"], layout.root, items, "items"),
           stage("transform", ["transform", "--kind=sid_spm", f"--vocab_size={args.vocab_size}",
                               f"--eval_from={FIRST_STEP_DAY}"], layout.root, window, "impressions")]
    representation = f"sid_spm_{args.vocab_size}"
    daily = ["daily", f"--representation={representation}"]
    first = stage("first_step", daily, layout.root, window, "impressions")
    steps = []
    for day in range(FIRST_STEP_DAY + 1, DAYS + 1):
        _land(source, layout, corpus, day)
        steps.append(stage(f"step_day{day}", daily, layout.root, args.impressions_per_day, "impressions"))
    with open(os.path.join(layout.ranker, os.listdir(layout.ranker)[0], "daily", f"day={DAYS:04d}.json")) as f:
        last_record = json.load(f)
    card_path = os.path.join(layout.transform_output(representation), "representation.json")
    with open(card_path) as f:
        card = json.load(f)
    fit_seconds = sum(r["seconds"] for r in fit)
    first_step, last_step = steps[0], steps[-1]
    results = {
        "world": {**world, "embedding_dim": 256}, "cpus": os.cpu_count(), "representation": representation,
        "items_at_fit": items, "lineage_fitted_on_days": list(range(1, FIRST_STEP_DAY)),
        "stages": rows, "targets": TARGETS,
        "lineage_fit_seconds": round(fit_seconds, 1),
        "first_step": first,
        "step_seconds": [s["seconds"] for s in steps],
        "step_peak_rss_gib": [s["peak_rss_gib"] for s in steps],
        "step_growth_time": round(last_step["seconds"] / first_step["seconds"], 3),
        "step_growth_memory": round(last_step["peak_rss_gib"] / first_step["peak_rss_gib"], 3),
        "last_step_record": {k: last_record[k] for k in ("metrics", "blessing", "published", "new_items")},
        "transform_counters": card.get("counters", {}),
    }
    results["met"] = {
        "lineage_fit": fit_seconds <= TARGETS["lineage_fit_seconds"],
        "step_seconds": max(results["step_seconds"]) <= TARGETS["step_seconds"],
        "step_memory": max(results["step_peak_rss_gib"]) <= TARGETS["step_peak_rss_gib"],
        "step_growth": max(results["step_growth_time"], results["step_growth_memory"]) <= TARGETS["step_growth"],
    }
    return emit(results, args.out)


if __name__ == "__main__":
    main()
