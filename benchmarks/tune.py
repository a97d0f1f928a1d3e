"""Choose the ranker's learning rates on a validation world, never on the world the README reports.

Simulates a world like the demo's but with another seed (default 1; the README reports seed 0),
trains the RQ-VAE and materialises its SIDs, transforms each arm once, then trains every arm (with
history) for every pair of learning rates on the grid under the evaluation protocol, and ranks the
pairs by the arms' mean CTR AUC over the evaluation days (CTR/1D AUC beside it). The best pair is
chosen, except that pairs within TIE of it are ties, broken in favour of the current defaults (a
difference that small is noise on this data). The chosen pair becomes TrainConfig's defaults;
docs/protocol.md records the run. Rerun, it reuses every transform and finished run (fingerprints).

  python benchmarks/tune.py --run_dir runs/tune --world_seed 1 --out benchmarks/results/tuning_seed1.json
"""

import argparse
import dataclasses
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline import cli  # noqa: E402
from pipeline.stages import day_loop, experiment  # noqa: E402
from pipeline.core.layout import RunLayout  # noqa: E402

from benchmarks.common import emit  # noqa: E402


TIE = 0.0005  # mean CTR AUC; the day-to-day spread of one arm's CTR AUC is about 10x this


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", default=os.path.join("runs", "tune"))
    parser.add_argument("--world_seed", type=int, default=1, help="the validation world (the README reports 0)")
    parser.add_argument("--arms", default="random_hash:8192,sid_ngram:2,sid_spm:8192")
    parser.add_argument("--learning_rates", default="0.002,0.005,0.01", help="dense layers' Adam rates")
    parser.add_argument("--table_learning_rates", default="0.01,0.02,0.05", help="item table's Adam rates")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    layout = RunLayout(args.run_dir)
    if not os.path.exists(os.path.join(layout.sids, "stats.json")):
        for command in (["simulate", "--seed", str(args.world_seed)], ["train-rqvae", "--max_first_day", "0"],
                        ["materialize"]):
            if cli.main([command[0], "--run_dir", args.run_dir, *command[1:]]) != 0:
                raise SystemExit(f"sidrec {command[0]} failed while making the validation world")
    arms = experiment.parse_arms(args.arms)
    from beam_jobs import transform

    for arm in arms:
        transform.run(transform.TransformConfig(data_dir=layout.data.root, sids=layout.sids,
                                                output=layout.transform_output(arm.representation), kind=arm.kind,
                                                buckets=arm.buckets, ngram=arm.ngram, vocab_size=arm.vocab_size),
                      log=print)
    grid = []
    for learning_rate, table_learning_rate in itertools.product(_floats(args.learning_rates),
                                                                _floats(args.table_learning_rates)):
        config = day_loop.TrainConfig(learning_rate=learning_rate, table_learning_rate=table_learning_rate)
        scores = {}
        for arm in arms:
            print(f"== {arm.representation}: learning_rate {learning_rate}, table_learning_rate {table_learning_rate}")
            history = day_loop.train(os.path.join(layout.transform, arm.representation),
                                     os.path.join(layout.ranker, day_loop.run_dir_name(arm.representation, config)),
                                     config, export_every_day=False, log=lambda *_: None)
            scores[arm.representation] = {"ctr_auc": experiment.mean_over_days(history, "ctr_auc"),
                                          "ctr_1d_auc": experiment.mean_over_days(history, "ctr_1d_auc")}
        grid.append({"learning_rate": learning_rate, "table_learning_rate": table_learning_rate, "arms": scores,
                     "mean_ctr_auc": sum(s["ctr_auc"] for s in scores.values()) / len(scores),
                     "mean_ctr_1d_auc": sum(s["ctr_1d_auc"] for s in scores.values()) / len(scores)})
    grid.sort(key=lambda g: -g["mean_ctr_auc"])
    defaults = day_loop.TrainConfig()
    chosen = next((g for g in grid if grid[0]["mean_ctr_auc"] - g["mean_ctr_auc"] < TIE
                   and (g["learning_rate"], g["table_learning_rate"]) == (defaults.learning_rate,
                                                                          defaults.table_learning_rate)), grid[0])
    print(f"{'learning_rate':>13} {'table_lr':>8} {'mean CTR AUC':>12} {'mean CTR/1D':>11}")
    for g in grid:
        print(f"{g['learning_rate']:>13g} {g['table_learning_rate']:>8g} {g['mean_ctr_auc']:>12.4f} "
              f"{g['mean_ctr_1d_auc']:>11.4f}")
    print(f"chosen: learning_rate {chosen['learning_rate']:g}, table_learning_rate {chosen['table_learning_rate']:g}")
    return emit({"world_seed": args.world_seed, "arms": args.arms, "with_history": True, "tie": TIE,
                 "defaults_before": dataclasses.asdict(defaults), "chosen": chosen, "grid": grid}, args.out)


if __name__ == "__main__":
    main()
