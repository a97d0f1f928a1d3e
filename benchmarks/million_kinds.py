"""The transform job against its own graph at a million items, for every representation kind.

On the world of benchmarks/million.py (ROOT/source, the SID table ROOT/live/sids), the lineage's days
1-5 with the corpus as it stood on day 5: for random hashing (131,072 buckets), dense, bigram and SPM
(131,072 pieces), the whole `sidrec transform` in its own process (5,000,000 impressions: at this size
the job's fixed seconds are a few percent), then its transform graph in process on day 5's joined rows
(1,000,000), in batches of the job's size, the median of --repeats passes (benchmarks/transform.py's
graph_rate, which checks the serialized examples equal the job's). Reported per kind: the job's rate,
the graph's, their ratio (target >= 0.5), and SPM's graph against random hashing's (target >= 0.8).

  python benchmarks/million_kinds.py --root /work/bench/million --out benchmarks/results/million_kinds.json
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
from benchmarks.transform import graph_rate  # noqa: E402
from pipeline.core.layout import RunLayout  # noqa: E402

FIT_DAYS = 5
KINDS = {"random_hash_131072": ["--kind=random_hash", "--buckets=131072"], "dense": ["--kind=dense"],
         "sid_2gram": ["--kind=sid_ngram", "--ngram=2"], "sid_spm_131072": ["--kind=sid_spm", "--vocab_size=131072"]}


def _world(root: str) -> RunLayout:
    """ROOT/kinds: days 1-5 of the source logs, the corpus of day 5, the live SID table (linked, not copied)."""
    source, live, layout = (RunLayout(os.path.join(root, name)) for name in ("source", "live", "kinds"))
    shutil.rmtree(layout.root, ignore_errors=True)
    os.makedirs(layout.data.logs)
    for day in range(1, FIT_DAYS + 1):
        os.symlink(source.data.day_dir(day), layout.data.day_dir(day))
    corpus = pq.read_table(source.data.corpus)
    pq.write_table(corpus.filter(pc.less_equal(corpus.column("first_day"), FIT_DAYS)), layout.data.corpus)
    os.symlink(live.sids, layout.sids)
    return layout


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.join("runs", "million"), help="benchmarks/million.py's root")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    root = os.path.abspath(args.root)
    layout = _world(root)
    results = {"days": list(range(1, FIT_DAYS + 1)), "graph_day": FIT_DAYS, "repeats": args.repeats, "kinds": {}}
    for name in args.kinds.split(","):
        print(f"{name} ...", file=sys.stderr, flush=True)
        seconds, gib = run_stage(["transform", *KINDS[name], f"--eval_from={FIT_DAYS}"], layout.root,
                                 os.path.join(root, "logs", f"kinds_{name}.log"))
        output = layout.transform_output(name)
        with open(os.path.join(output, "representation.json")) as f:
            rows = json.load(f)["counters"]["rows_joined"]
        graph = graph_rate(layout, output, [FIT_DAYS], args.repeats)
        results["kinds"][name] = {"job_seconds": round(seconds, 1), "job_peak_rss_gib": round(gib, 2),
                                  "job_examples": rows, "job_examples_per_s": round(rows / seconds),
                                  "graph_examples": graph["examples"], "graph_seconds": graph["seconds"],
                                  "graph_examples_per_s": graph["examples_per_s"],
                                  "job_to_graph": round(rows / seconds / graph["examples_per_s"], 3),
                                  "graph_outputs_equal_the_job": graph["outputs_equal_the_job"]}
        print(results["kinds"][name], file=sys.stderr, flush=True)
        shutil.rmtree(os.path.join(output, "transformed"))  # 1.3 GB a kind
    kinds = results["kinds"]
    if "sid_spm_131072" in kinds and "random_hash_131072" in kinds:
        for where in ("job", "graph"):
            results[f"sid_spm_to_random_hash_{where}"] = round(
                kinds["sid_spm_131072"][f"{where}_examples_per_s"] / kinds["random_hash_131072"][f"{where}_examples_per_s"], 3)
    return emit(results, args.out)


if __name__ == "__main__":
    main()
