"""A lineage aging on a drifting world, and its refresh: health signals, then warm against cold starts.

Two worlds at the demo's size (20,000 items, 20,000 impressions a day, 12 days): the drifting one
(`--drift_day`, half of the new items from then on under a topic absent before) and its still twin. In each,
a lineage (RQ-VAE on the items up to day 5, SPM 8,192) is fitted on days 1-5 and `sidrec daily` takes every
day as it lands, recording its health (pipeline.sid.sid_health): the days a refresh was advised, in both.

In the drifting world, on day T (`--refresh_day`), `sidrec refresh` fits a new lineage beside the served
one three times (its own run directory and a copy of the serving directory each):
  warm:    the ranker carried over from the served one, trained from day T on;
  cold:    a new initialisation trained from day T on (the same budget);
  history: a new ranker trained through every day (the expensive upper bound; its training seconds kept).
Each then takes days T..12 with `sidrec daily`, blessed against the served version of day T-1. Per lineage
and day: CTR AUC and CTR/1D AUC (evaluated before training on the day), blessed, published. With model
seeds (`--seeds`): the served lineage is trained with each seed and each refresh starts from its own seed's.
Reported: the health trends, each new lineage's first evaluation day against the old lineage's on that day,
the days until it is published, and the mean over days T+1..12 of each lineage's CTR/1D AUC with t intervals
over seeds.

  python benchmarks/refresh.py --root /tmp/refresh_bench --out benchmarks/results/refresh.json
"""

import argparse
import dataclasses
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.core.tf_env import tf  # noqa: E402,F401  (TensorFlow with Keras 2 first)

from beam_jobs import materialize_sids, transform  # noqa: E402
from benchmarks.common import emit  # noqa: E402
from models.rqvae import RQVAEConfig  # noqa: E402
from pipeline.core import stats  # noqa: E402
from pipeline.core.layout import RQVAELayout, RunLayout  # noqa: E402
from pipeline.data.simulator import SimulatorConfig  # noqa: E402
from pipeline.stages import bless, daily, day_loop, refresh, simulate, train_rqvae  # noqa: E402

BEAM = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
REPRESENTATION = "sid_spm_8192"
FITTED_THROUGH = 5
STARTS = ("warm", "cold", "history")


def _step(layout: RunLayout, train: day_loop.TrainConfig, serving_dir: str = "") -> dict:
    """One `sidrec daily` step of the day that just landed; its record."""
    [record] = daily.run(layout, daily.DailyConfig(representation=REPRESENTATION, serving_dir=serving_dir), train,
                         bless.BlessConfig(), BEAM, log=print)
    return record


def _summary(record: dict) -> dict:
    return {"day": record["day"], "ctr_auc": record["metrics"]["ctr_auc"],
            "ctr_1d_auc": record["metrics"]["ctr_1d_auc"], "blessed": record["blessing"]["blessed"],
            "published": record["published"], "seconds": record["seconds"],
            "refresh_advised": record["health"]["refresh_advised"], "tripped": record["health"]["tripped"],
            **{k: record["health"].get(k) for k in ("collision_rate", "lineage_collision_rate", "perplexity_ratio")}}


def _lineage(world: SimulatorConfig, root: str, train: day_loop.TrainConfig) -> RunLayout:
    """Days 1..FITTED_THROUGH landed, the lineage fitted on them, its first daily step taken (version 1)."""
    layout = RunLayout(root)
    simulate.run(world, layout, through_day=FITTED_THROUGH)
    train_rqvae.run(layout, RQVAEConfig(), max_first_day=FITTED_THROUGH, log=lambda *_: None)
    materialize_sids.run(materialize_sids.MaterializeConfig(corpus=layout.data.corpus,
                                                            model=RQVAELayout(layout.rqvae).export,
                                                            output=layout.sids), BEAM)
    transform.run(transform.TransformConfig(data_dir=layout.data.root, sids=layout.sids,
                                            output=layout.transform_output(REPRESENTATION), kind="sid_spm",
                                            vocab_size=8192, eval_from=FITTED_THROUGH), BEAM)
    _step(layout, train)
    return layout


def run_world(world: SimulatorConfig, root: str, train: day_loop.TrainConfig, refresh_day: int | None) -> dict:
    """The served lineage day by day; on `refresh_day` the three refreshes, each then day by day too."""
    shutil.rmtree(root, ignore_errors=True)
    served = _lineage(world, os.path.join(root, "served"), train)
    out = {"served": [], **{start: [] for start in STARTS}, "refresh_seconds": {}}
    refreshed = {}
    for day in range(FITTED_THROUGH + 1, world.num_days + 1):
        simulate.run(world, served, through_day=day)
        if day == refresh_day:
            for start in STARTS:
                serving = os.path.join(root, start, "serving_copy")
                shutil.copytree(served.serving("ranker"), serving)  # blessed against the version of day T-1
                started = time.perf_counter()
                refresh.run(served, refresh.RefreshConfig(new_run_dir=os.path.join(root, start),
                                                          representation=REPRESENTATION, start=start), train, BEAM)
                out["refresh_seconds"][start] = round(time.perf_counter() - started, 1)
                refreshed[start] = (RunLayout(os.path.join(root, start)), serving)
        out["served"].append(_summary(_step(served, train)))
        for start, (layout, serving) in refreshed.items():
            out[start].append(_summary(_step(layout, train, serving)))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/sidrec_refresh_bench", help="scratch directory (replaced)")
    parser.add_argument("--drift_day", type=int, default=7)
    parser.add_argument("--refresh_day", type=int, default=9)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    drifting = SimulatorConfig(num_days=12, impressions_per_day=20_000, drift_day=args.drift_day)
    still = dataclasses.replace(drifting, drift_day=0)
    results = {"drifting_world": dataclasses.asdict(drifting), "representation": REPRESENTATION,
               "fitted_through": FITTED_THROUGH, "refresh_day": args.refresh_day, "seeds": args.seeds,
               "still": run_world(still, os.path.join(args.root, "still"), day_loop.TrainConfig(holdout_per_mille=50),
                                  None)["served"], "drifting": []}
    for seed in range(args.seeds):
        train = day_loop.TrainConfig(holdout_per_mille=50, seed=seed)
        results["drifting"].append(run_world(drifting, os.path.join(args.root, f"drift_seed{seed}"), train,
                                             args.refresh_day))
    after = [d for d in range(args.refresh_day + 1, drifting.num_days + 1)]
    results["advised_days"] = {"still": [s["day"] for s in results["still"] if s["refresh_advised"]],
                               "drifting": [[s["day"] for s in r["served"] if s["refresh_advised"]]
                                            for r in results["drifting"]]}
    results["mean_after_refresh"] = {
        lineage: {key: stats.interval([sum(s[key] for s in r[lineage] if s["day"] in after) / len(after)
                                       for r in results["drifting"]]) for key in ("ctr_auc", "ctr_1d_auc")}
        for lineage in ("served", *STARTS)}
    results["first_day_against_served"] = {
        start: stats.interval([r[start][0]["ctr_auc"] - next(s["ctr_auc"] for s in r["served"]
                                                              if s["day"] == args.refresh_day)
                               for r in results["drifting"]]) for start in STARTS}
    results["days_until_published"] = {
        start: [next((s["day"] - args.refresh_day for s in r[start] if s["published"] is not None), None)
                for r in results["drifting"]] for start in STARTS}
    return emit(results, args.out)


if __name__ == "__main__":
    main()
