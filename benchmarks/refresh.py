"""A lineage aging on a drifting world, and its refresh: health signals, then warm against cold starts.

Two worlds at the demo's size (20,000 items, 20,000 impressions a day): the drifting one (12 days,
`--drift_day`: half of the new items from then on under a topic absent before) and its still twin (10
daily steps after the fitted day). In each, a lineage (RQ-VAE on the items up to day 5, SPM 8,192) is
fitted on days 1-5 and `sidrec daily` takes every day as it lands, recording its health
(pipeline.sid.sid_health): the days a refresh was advised, in both.

In the drifting world, with model seeds (`--seeds`, one served ranker run and serving directory each), on
day T (`--refresh_day`) `sidrec refresh` fits one new lineage beside the served one (an RQ-VAE on every item
up to T, its SIDs, SPM 8,192 learned on the days before T) and three starts share it, per seed:
  warm:    the ranker carried over from the served one (pipeline.stages.warm_start), trained from day T on;
  cold:    a new initialisation trained from day T on (the same budget);
  history: a new ranker trained through every day by its first step (the expensive upper bound).
Each then takes days T..end with `sidrec daily`, blessed against a copy of its seed's serving directory as it
stood before day T. Per lineage and day: CTR AUC and CTR/1D AUC (evaluated before training on the day),
blessed, published, health. Reported: the advised days, each start's first evaluation day against the
served model on that day, the days until it is published, and the mean over days T+1.. of each lineage's
AUCs, with t intervals over seeds.

  python benchmarks/refresh.py --out benchmarks/results/refresh.json
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
from pipeline.sid import sid_health  # noqa: E402
from pipeline.stages import bless, daily, day_loop, refresh, simulate, train_rqvae, warm_start  # noqa: E402

BEAM = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
REPRESENTATION = "sid_spm_8192"
FITTED_THROUGH = 5
STARTS = ("warm", "cold", "history")
# What a refreshed lineage shares between its three starts: all of it but the ranker runs.
SHARED = ("data", "rqvae", "sids", "transform")


def _step(layout: RunLayout, train: day_loop.TrainConfig, serving: str, day: int) -> dict:
    """One `sidrec daily` step of `day` for one ranker run (its own serving directory); its summary."""
    [record] = daily.run(layout, daily.DailyConfig(representation=REPRESENTATION, serving_dir=serving, day=day),
                         train, bless.BlessConfig(), BEAM, log=print)
    health = record["health"]
    return {"day": record["day"], "ctr_auc": record["metrics"]["ctr_auc"],
            "ctr_1d_auc": record["metrics"]["ctr_1d_auc"], "blessed": record["blessing"]["blessed"],
            "published": record["published"], "seconds": record["seconds"],
            "refresh_advised": health["refresh_advised"], "tripped": health["tripped"],
            **{k: health.get(k) for k in ("collision_rate", "lineage_collision_rate", "perplexity_ratio",
                                          "ctr_1d_drop", "cold_start_share", "untrained_piece_share",
                                          "untrained_piece_share_new")}}


def _lineage(world: SimulatorConfig, root: str) -> RunLayout:
    """Days 1..FITTED_THROUGH landed and the lineage fitted on them (no ranker yet)."""
    shutil.rmtree(root, ignore_errors=True)
    layout = RunLayout(root)
    simulate.run(world, layout, through_day=FITTED_THROUGH)
    train_rqvae.run(layout, RQVAEConfig(), max_first_day=FITTED_THROUGH, log=lambda *_: None)
    materialize_sids.run(materialize_sids.MaterializeConfig(corpus=layout.data.corpus,
                                                            model=RQVAELayout(layout.rqvae).export,
                                                            output=layout.sids), BEAM)
    transform.run(transform.TransformConfig(data_dir=layout.data.root, sids=layout.sids,
                                            output=layout.transform_output(REPRESENTATION), kind="sid_spm",
                                            vocab_size=8192, eval_from=FITTED_THROUGH), BEAM)
    return layout


def run_still(world: SimulatorConfig, root: str, train: day_loop.TrainConfig) -> list[dict]:
    """The served lineage of a world without drift, one step a day from the fitted day on."""
    layout = _lineage(world, root)
    steps = []
    for day in range(FITTED_THROUGH, world.num_days + 1):
        simulate.run(world, layout, through_day=day)
        steps.append(_step(layout, train, layout.serving("ranker"), day))
    return steps


def _refreshed(served: RunLayout, root: str, day: int, trains: list[day_loop.TrainConfig]) -> dict:
    """On `day`: one new lineage fitted beside the served one (`sidrec refresh`), then per start a run directory
    sharing it, holding one ranker run per seed (warm and cold written now, history left to its first step)."""
    started = time.perf_counter()
    fitted = refresh.run(served, refresh.RefreshConfig(new_run_dir=os.path.join(root, "new"),
                                                       representation=REPRESENTATION, start="history"),
                         trains[0], BEAM)
    out = {"fit_seconds": round(time.perf_counter() - started, 1), "layouts": {}, "start_seconds": {}}
    for start in STARTS:
        layout = RunLayout(os.path.join(root, start))
        os.makedirs(layout.root)
        for name in SHARED:
            os.symlink(os.path.join(fitted["new_run_dir"], name), os.path.join(layout.root, name))
        out["layouts"][start] = layout
        for train in trains if start != "history" else ():
            started = time.perf_counter()
            warm_start.run(served.transform_output(REPRESENTATION),
                           os.path.join(served.ranker, day_loop.run_dir_name(REPRESENTATION, train)),
                           fitted["transform"],
                           os.path.join(layout.ranker, day_loop.run_dir_name(REPRESENTATION, train)), train,
                           start_day=day, served_sids=served.sids, new_sids=layout.sids, warm=start == "warm")
            out["start_seconds"].setdefault(start, []).append(round(time.perf_counter() - started, 1))
    return out


def run_drifting(world: SimulatorConfig, root: str, trains: list[day_loop.TrainConfig], refresh_day: int) -> dict:
    """The served lineage day by day, one ranker run per seed (each its own serving directory); on `refresh_day`
    the new lineage and its three starts per seed, each then day by day against a copy of its seed's serving
    directory as it stood before the day (the version trained through the day before)."""
    served = _lineage(world, os.path.join(root, "served"))
    serving = {t.seed: served.serving(f"ranker_seed{t.seed}") for t in trains}
    out = {"served": {t.seed: [] for t in trains}, **{s: {t.seed: [] for t in trains} for s in STARTS}}
    refreshed = None
    for day in range(FITTED_THROUGH, world.num_days + 1):
        simulate.run(world, served, through_day=day)
        if day == refresh_day:
            copies = {(s, t.seed): shutil.copytree(serving[t.seed], os.path.join(root, "serving_copies", s,
                                                                                  str(t.seed)))
                      for s in STARTS for t in trains}
            refreshed = _refreshed(served, root, day, trains)
            out.update(fit_seconds=refreshed["fit_seconds"], start_seconds=refreshed["start_seconds"])
        for train in trains:
            out["served"][train.seed].append(_step(served, train, serving[train.seed], day))
        for start, layout in (refreshed or {}).get("layouts", {}).items():
            for train in trains:
                out[start][train.seed].append(_step(layout, train, copies[(start, train.seed)], day))
    return out


def _mean(steps: list[dict], key: str, days: list[int]) -> float:
    return sum(s[key] for s in steps if s["day"] in days) / len(days)


def summarise(results: dict, refresh_day: int, last_day: int) -> dict:
    """The acceptance's figures: advised days, each start's first day against the served model, the days until
    it is published, and every lineage's mean over the days after the refresh, with t intervals over seeds."""
    drifting, seeds = results["drifting"], sorted(results["drifting"]["served"])
    after = list(range(refresh_day + 1, last_day + 1))
    served_on = {seed: next(s for s in drifting["served"][seed] if s["day"] == refresh_day) for seed in seeds}
    return {
        "advised_days": {"still": [s["day"] for s in results["still"] if s["refresh_advised"]],
                         "drifting": {seed: [s["day"] for s in drifting["served"][seed] if s["refresh_advised"]]
                                      for seed in seeds}},
        "first_day_against_served": {
            start: {key: stats.interval([drifting[start][seed][0][key] - served_on[seed][key] for seed in seeds])
                    for key in ("ctr_auc", "ctr_1d_auc")} for start in STARTS},
        "first_day_blessed": {start: [drifting[start][seed][0]["blessed"] for seed in seeds] for start in STARTS},
        "days_until_published": {
            start: [next((s["day"] - refresh_day for s in drifting[start][seed] if s["published"] is not None), None)
                    for seed in seeds] for start in STARTS},
        "mean_after_refresh": {
            lineage: {key: stats.interval([_mean(drifting[lineage][seed], key, after) for seed in seeds])
                      for key in ("ctr_auc", "ctr_1d_auc")} for lineage in ("served", *STARTS)},
        "gain_after_refresh_vs_served": {
            start: {key: stats.interval([_mean(drifting[start][seed], key, after)
                                         - _mean(drifting["served"][seed], key, after) for seed in seeds])
                    for key in ("ctr_auc", "ctr_1d_auc")} for start in STARTS},
        "history_first_step_seconds": [drifting["history"][seed][0]["seconds"] for seed in seeds],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/sidrec_refresh_bench", help="scratch directory (replaced)")
    parser.add_argument("--drift_day", type=int, default=7)
    parser.add_argument("--refresh_day", type=int, default=9)
    parser.add_argument("--num_days", type=int, default=12, help="days of the drifting world")
    parser.add_argument("--still_days", type=int, default=10, help="daily steps after the fitted day, still world")
    parser.add_argument("--num_items", type=int, default=20_000)
    parser.add_argument("--impressions_per_day", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    drifting = SimulatorConfig(num_days=args.num_days, num_items=args.num_items,
                               impressions_per_day=args.impressions_per_day, drift_day=args.drift_day)
    still = dataclasses.replace(drifting, drift_day=0, num_days=FITTED_THROUGH + args.still_days)
    trains = [day_loop.TrainConfig(holdout_per_mille=50, seed=seed) for seed in range(args.seeds)]
    results = {"drifting_world": dataclasses.asdict(drifting),
               "still_days": list(range(FITTED_THROUGH, still.num_days + 1)),
               "representation": REPRESENTATION, "fitted_through": FITTED_THROUGH, "refresh_day": args.refresh_day,
               "seeds": args.seeds, "thresholds": dataclasses.asdict(sid_health.HealthThresholds()),
               "still": run_still(still, os.path.join(args.root, "still"), trains[0]),
               "drifting": run_drifting(drifting, os.path.join(args.root, "drifting"), trains, args.refresh_day)}
    results["summary"] = summarise(results, args.refresh_day, drifting.num_days)
    results["seconds"] = round(time.perf_counter() - started, 1)
    return emit(results, args.out)


if __name__ == "__main__":
    main()
