"""The whole pipeline at the demo's scale (1x) and ten times it (10x): time, peak memory, throughput.

Each stage runs as the `sidrec` command a user would type, in its own process, so its wall time and
peak resident memory (the process's maxrss, Beam's in-memory runner and TensorFlow included) are the
stage's own. The worlds differ only in size: 1x is 20,000 items, 5,000 users and 10 days of 50,000
impressions (500,000); 10x is 200,000 items, 50,000 users and 10 days of 500,000 (5,000,000); D=256
in both. Stages: simulate, train the RQ-VAE, materialise SIDs, transform (sid_spm, 8,192 pieces) and
train the ranker day by day. The growth factor is 10x over 1x: about 10 for time and no more than
about 2 for the memory of the streaming stages (materialise, transform, train) is the goal.

  python benchmarks/scale.py --out benchmarks/results/scale.json    # about 40 minutes on 2 cores
  python benchmarks/scale.py --scales 1x                            # the small world only
  python benchmarks/scale.py --until transform                      # the stages up to the transform
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import emit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLDS = {
    "1x": {"num_items": 20_000, "num_users": 5_000, "num_days": 10, "impressions_per_day": 50_000},
    "10x": {"num_items": 200_000, "num_users": 50_000, "num_days": 10, "impressions_per_day": 500_000},
}
REPRESENTATION = ("sid_spm", 8192)
STREAMING = ("materialize", "transform", "train")


def stages(world: dict) -> list[tuple[str, list[str], int]]:
    """(stage, sidrec arguments after --run_dir, units of work) in pipeline order."""
    kind, vocab = REPRESENTATION
    impressions = world["num_days"] * world["impressions_per_day"]
    return [
        ("simulate", ["simulate", *(f"--{k}={v}" for k, v in world.items())], impressions),
        ("train_rqvae", ["train-rqvae", "--max_first_day=0", "--max_epochs=20"], world["num_items"]),
        ("materialize", ["materialize"], world["num_items"]),
        ("transform", ["transform", f"--kind={kind}", f"--vocab_size={vocab}"], impressions),
        ("train", ["train", f"--representation={kind}_{vocab}"], impressions),
    ]


def run_stage(command: list[str], run_dir: str, log_path: str) -> tuple[float, float]:
    """Runs `sidrec COMMAND --run_dir RUN_DIR ...`; returns (seconds, peak resident GiB)."""
    argv = [sys.executable, "-m", "pipeline.cli", command[0], "--run_dir", run_dir, *command[1:]]
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed; see {log_path}")
    return seconds, usage.ru_maxrss / 2 ** 20  # ru_maxrss is in KiB on Linux


def measure(scale: str, root: str, log=print, until: str = "") -> list[dict]:
    run_dir = os.path.join(root, scale)
    rows = []
    planned = stages(WORLDS[scale])
    if until:
        planned = planned[:[name for name, _, _ in planned].index(until) + 1]
    for stage, command, units in planned:
        log(f"{scale}: {stage} ...")
        seconds, gib = run_stage(command, run_dir, os.path.join(root, f"{scale}-{stage}.log"))
        rows.append({"scale": scale, "stage": stage, "seconds": round(seconds, 1), "peak_rss_gib": round(gib, 2),
                     "units": units, "units_per_s": round(units / seconds)})
        log(f"{scale}: {stage} {seconds:.0f} s, peak {gib:.2f} GiB, {units / seconds:,.0f} units/s")
    return rows


def growth(rows: list[dict]) -> list[dict]:
    """Per stage: 10x time and memory over 1x."""
    by = {(r["scale"], r["stage"]): r for r in rows}
    out = []
    for stage in dict.fromkeys(r["stage"] for r in rows):
        small, large = by.get(("1x", stage)), by.get(("10x", stage))
        if small and large:
            out.append({"stage": stage, "time_growth": round(large["seconds"] / small["seconds"], 2),
                        "memory_growth": round(large["peak_rss_gib"] / small["peak_rss_gib"], 2),
                        "streaming": stage in STREAMING})
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1x,10x", help="comma-separated: 1x, 10x")
    parser.add_argument("--root", default=os.path.join("runs", "scale"), help="run directories and stage logs")
    parser.add_argument("--until", default="", choices=["", *(name for name, _, _ in stages(WORLDS["1x"]))],
                        help="stop after this stage (default: every stage)")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    os.makedirs(args.root, exist_ok=True)
    rows = [row for scale in args.scales.split(",")
            for row in measure(scale, os.path.abspath(args.root), lambda m: print(m, file=sys.stderr), args.until)]
    return emit({"worlds": WORLDS, "representation": "_".join(map(str, REPRESENTATION)), "cpus": os.cpu_count(),
                 "stages": rows, "growth": growth(rows)}, args.out)


if __name__ == "__main__":
    main()
