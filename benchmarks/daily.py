"""The cost of a daily step against a full rebuild, and whether a step grows with the days already taken.

A 10-day world at the demo's size (20,000 items, 20,000 impressions a day), SPM 8K: the lineage is fitted
on days 1-5 (training window days 1-4, day 5 its first evaluation day), the first `sidrec daily` step
trains the ranker through day 5 and publishes version 1, then `sidrec daily` takes days 6-10 one at a
time, each timed; then the batch path rebuilds everything (transform of the 10 days, training
through day 10), timed. Reported, measured in one run: step(day 10) / step(day 6) (target <= 1.2: a step
must not read or redo the history) and step / rebuild.

  python benchmarks/daily.py --root /tmp/daily_bench --out benchmarks/results/daily.json
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
from pipeline.core.layout import RQVAELayout, RunLayout  # noqa: E402
from pipeline.data.simulator import SimulatorConfig  # noqa: E402
from pipeline.stages import bless, daily, day_loop, simulate, train_rqvae  # noqa: E402

BEAM = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
REPRESENTATION = "sid_spm_8192"


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _transform(layout: RunLayout, output: str, eval_from: int) -> None:
    transform.run(transform.TransformConfig(data_dir=layout.data.root, sids=layout.sids, output=output,
                                            kind="sid_spm", vocab_size=8192, eval_from=eval_from), BEAM)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/sidrec_daily_bench", help="scratch directory (replaced)")
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    shutil.rmtree(args.root, ignore_errors=True)
    first_daily = args.days // 2 + 1
    world = SimulatorConfig(num_days=args.days, impressions_per_day=20_000)
    full = RunLayout(os.path.join(args.root, "full"))
    simulate.run(world, full)
    train_rqvae.run(full, RQVAEConfig(), max_first_day=0, log=lambda *_: None)
    materialize_sids.run(materialize_sids.MaterializeConfig(corpus=full.data.corpus, model=RQVAELayout(full.rqvae).export,
                                                            output=full.sids), BEAM)
    config = day_loop.TrainConfig(holdout_per_mille=50)

    # The daily path: a lineage fitted on the first half, then one step a day.
    layout = RunLayout(os.path.join(args.root, "daily"))
    os.makedirs(layout.data.logs)
    shutil.copy(full.data.corpus, layout.data.corpus)
    shutil.copytree(full.sids, layout.sids)
    for day in range(1, first_daily):
        shutil.copytree(full.data.day_dir(day), layout.data.day_dir(day))
    eval_from = first_daily - 1
    _, fit_seconds = _timed(lambda: _transform(layout, layout.transform_output(REPRESENTATION), eval_from))
    # The first step trains through the fitted days and publishes version 1 (serving starts that day).
    [first_step], first_step_seconds = _timed(lambda: daily.run(
        layout, daily.DailyConfig(representation=REPRESENTATION), config, bless.BlessConfig(min_auc=0.0), BEAM,
        log=print))
    steps = {}
    for day in range(first_daily, args.days + 1):
        shutil.copytree(full.data.day_dir(day), layout.data.day_dir(day))
        [record], seconds = _timed(lambda: daily.run(layout, daily.DailyConfig(representation=REPRESENTATION), config,
                                                     bless.BlessConfig(min_auc=0.0), BEAM, log=print))
        steps[day] = {"seconds": round(seconds, 1), "published": record["published"],
                      "blessed": record["blessing"]["blessed"], "ctr_auc": record["metrics"]["ctr_auc"]}

    # The batch path: everything rebuilt from the logs.
    def rebuild():
        output = full.transform_output(REPRESENTATION)
        _transform(full, output, eval_from)
        day_loop.train(output, os.path.join(full.ranker, "rebuild"), config, log=lambda *_: None, fit_verbose=0)
    _, rebuild_seconds = _timed(rebuild)
    first, last = steps[first_daily]["seconds"], steps[args.days]["seconds"]
    return emit({"world": dataclasses.asdict(world), "representation": REPRESENTATION,
                 "lineage_fitted_on_days": list(range(1, eval_from)), "lineage_days": list(range(1, first_daily)),
                 "fit_transform_seconds": round(fit_seconds, 1),
                 "first_step": {"day": first_step["day"], "seconds": round(first_step_seconds, 1),
                                "published": first_step["published"]},
                 "steps": steps, "rebuild_seconds": round(rebuild_seconds, 1),
                 f"step_day{args.days}_over_step_day{first_daily}": round(last / first, 3),
                 "mean_step_over_rebuild": round(sum(s["seconds"] for s in steps.values()) / len(steps)
                                                 / rebuild_seconds, 3)}, args.out)


if __name__ == "__main__":
    main()
