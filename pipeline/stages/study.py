"""`sidrec study`: the paper's findings tested with seeds in several simulated worlds and on MovieLens.

The study is a set of units, each a run directory that an unchanged rerun does not recompute (its
set-up is fingerprinted; every transform output and ranker run carries its own fingerprint):

- a simulated world (`--worlds`) and world seed s (0..S-1): RUN/worlds/<world>/seed<s>/ holds the
  world drawn with seed s, its RQ-VAE v0 (trained on the items before day 1), SIDs, lookups per item
  and the experiment with model seed s. World seed 0 also trains model seed 1: two runs of each arm
  on the same data, for the A/A prediction difference. Intervals are over the S (world, model) seeds,
  each change paired with the baseline of the same seed.
- F7, in the matched world: an RQ-VAE v1 trained on the items up to day T (the last training day),
  its own SID table and transforms under RUN/worlds/<world>/seed<s>/rqvae_v1/, the SID arms trained on
  it with the same seeds.
- `--world_draws once` (a world too large to draw S times, as the `f4_at_scale` preset's): one draw
  (seed 0) at RUN/worlds/<world>/seed0/ with model seeds 0..S-1, bootstrapped like MovieLens below.
- MovieLens (`--movielens_dir`, skipped when `none`): RUN/movielens/, one data set (it cannot be drawn
  again), model seeds 0..S-1; its intervals come from a bootstrap over users and seeds, paired across
  arms (pipeline.stages.bootstrap).

RUN/metrics/study.json gathers every unit's table; `sidrec report --run_dir RUN` turns it into the report.
"""

import dataclasses
import os

from beam_jobs import materialize_sids
from models.rqvae import RQVAEConfig
from pipeline.core import files, fingerprint, stats
from pipeline.core.layout import RQVAELayout, RunLayout
from pipeline.core.protocol import split_days
from pipeline.data import movielens
from pipeline.data.simulator import SimulatorConfig
from pipeline.stages.configs import CORE_ARMS, PRESETS, SKIP, WORLD_DRAWS, StudyConfig  # noqa: F401
from pipeline.stages import bootstrap, day_loop, experiment, findings, lookups, simulate, train_rqvae

# v1 is compared with v0 arm by arm, so the table's baseline (the first arm) only satisfies the experiment.
F7_ARMS = "sid_ngram:2,sid_spm:8192"
LOOKUP_SIZES = (1024, 2048, 8192, 11585, 32768)



@dataclasses.dataclass(frozen=True)
class StudyLayout:
    """Where each unit of a study lives."""

    root: str

    def world(self, world: str, seed: int) -> RunLayout:
        return RunLayout(os.path.join(self.root, "worlds", world, f"seed{seed}"))

    def rqvae_v1(self, world: str, seed: int) -> RunLayout:
        return RunLayout(os.path.join(self.world(world, seed).root, "rqvae_v1"))

    @property
    def movielens(self) -> RunLayout:
        return RunLayout(os.path.join(self.root, "movielens"))

    @property
    def results(self) -> str:
        return RunLayout(self.root).study


def run(layout: StudyLayout, config: StudyConfig, rqvae: RQVAEConfig = RQVAEConfig(),
        train: day_loop.TrainConfig = day_loop.TrainConfig(), beam_args=(), log=print) -> dict:
    """Runs (or reuses) every unit; writes RUN/metrics/study.json. Returns it."""
    units = []
    for world in config.worlds:
        if config.world_draws == "once":
            units.append(_one_draw_unit(world, layout, config, rqvae, train, beam_args, log))
            continue
        matched = world == config.matched_world
        arms = config.arms + (f",{experiment.MATCHED}" if matched else "")
        per_seed, f7 = [], []
        for seed in range(config.seeds):
            log(f"==== world {world}, seed {seed} ====")
            world_layout = layout.world(world, seed)
            _set_up_world(world_layout, config.simulator(world, seed), dataclasses.replace(rqvae, seed=seed), beam_args,
                          log)
            per_seed.append(experiment.run(
                world_layout, experiment.ExperimentConfig(arms=arms, seeds=2 if seed == 0 else 1,
                                                          history=config.history),
                dataclasses.replace(train, seed=seed), beam_args, log=log))
            if matched:
                f7.append(_rqvae_v1(layout.rqvae_v1(world, seed), world_layout, dataclasses.replace(rqvae, seed=seed),
                                    dataclasses.replace(train, seed=seed), beam_args, log))
        units.append(_world_unit(world, layout, config, per_seed, f7))
    if config.movielens_dir != SKIP:
        units.append(_movielens_unit(layout.movielens, config, rqvae, train, beam_args, log))
    results = {"config": dataclasses.asdict(config), "rqvae_config": dataclasses.asdict(rqvae),
               "train_config": dataclasses.asdict(train), "units": units,
               "fingerprint": fingerprint.Fingerprint([u["fingerprint"] for u in units]).value}
    files.write_json(layout.results, results)
    results["path"] = layout.results
    return results


def _set_up_world(layout: RunLayout, simulator: SimulatorConfig, rqvae: RQVAEConfig, beam_args, log) -> None:
    """Simulate, RQ-VAE v0 on the day-0 catalogue, SIDs, lookups: skipped when done with the same configs."""
    _set_up(layout, {"simulator": simulator.fingerprint_fields(), "rqvae": dataclasses.asdict(rqvae)}, beam_args, log,
            lambda: (simulate.run(simulator, layout),
                     train_rqvae.run(layout, rqvae, max_first_day=0, log=lambda *_: None)))


def _set_up(layout: RunLayout, inputs: dict, beam_args, log, make_data) -> None:
    """Makes a unit's data, RQ-VAE, SID table and lookups unless its fingerprint says they are there."""
    done = fingerprint.Fingerprint({"stage": "study_unit", **inputs})
    existing = fingerprint.read(layout.root)
    if existing and existing["fingerprint"] == done.value:
        log(f"== {layout.root}: data, RQ-VAE and SIDs reused (same configs)")
        return
    make_data()
    materialize_sids.run(materialize_sids.MaterializeConfig(
        corpus=layout.data.corpus, model=RQVAELayout(layout.rqvae).export, output=layout.sids), beam_args)
    lookups.run(layout, lookups.LookupsConfig(vocab_sizes=LOOKUP_SIZES))
    done.write(layout.root)


def _rqvae_v1(layout: RunLayout, world: RunLayout, rqvae: RQVAEConfig, train: day_loop.TrainConfig, beam_args,
              log) -> dict:
    """F7: an RQ-VAE trained on the items up to day T, its SIDs, and the SID arms trained on them."""
    last_train_day = split_days(world.data.logged_days()).train_window[-1]
    files.makedirs(layout.root)
    # The same data as v0's: only the SIDs differ. A link on a local disk, a copy on an object store.
    if files.is_local(layout.root):
        if not os.path.lexists(layout.data.root):  # local
            os.symlink(os.path.relpath(world.data.root, layout.root), layout.data.root)  # local
    elif not files.exists(layout.data.root):
        files.copy_tree(world.data.root, layout.data.root)
    _set_up(layout, {"rqvae": dataclasses.asdict(rqvae), "max_first_day": last_train_day,
                     "data": fingerprint.read(world.root)["fingerprint"]}, beam_args, log,
            lambda: train_rqvae.run(layout, rqvae, max_first_day=last_train_day, log=lambda *_: None))
    log(f"== F7: SIDs of an RQ-VAE v1 trained on the items up to day {last_train_day}")
    return experiment.run(layout, experiment.ExperimentConfig(arms=F7_ARMS, baseline=F7_ARMS.split(",")[0]), train,
                          beam_args, log=log)


def _world_unit(world: str, layout: StudyLayout, config: StudyConfig, per_seed: list[dict], f7: list[dict]) -> dict:
    """One world's table over its seeds: each seed's run of model seed = world seed (paired with the baseline
    of that seed), the A/A difference from world seed 0, the oracle averaged over the seeds."""
    named = [experiment.by_requested_name(results["runs"], results["substituted"]) for results in per_seed]
    runs = [r for seed, seed_runs in enumerate(named) for r in seed_runs if r["seed"] == seed]
    rows = experiment.with_aa_differences(experiment.summarise(runs), named[0])
    first = layout.world(world, 0)
    unit = {"name": world, "kind": "simulator", "balance": SimulatorConfig(world=world).balance,
            "seeds": config.seeds, "interval": "t over seeds (world seed = model seed), changes paired by seed",
            "baseline": per_seed[0]["baseline"], "substituted": _substitutions(per_seed),
            "eval_from": per_seed[0]["eval_from"], "days": runs[0]["days"], "rows": rows, "runs": runs,
            "oracle": _mean_oracle([r["oracle"] for r in per_seed]),
            "run_dirs": [layout.world(world, s).root for s in range(config.seeds)],
            "lookups": files.read_json(first.lookups),
            "sid_quality": files.read_json(RQVAELayout(first.rqvae).sid_quality),
            "fingerprint": fingerprint.Fingerprint([r["fingerprint"] for r in per_seed + f7]).value}
    if f7:
        v1 = [experiment.by_requested_name(results["runs"], results["substituted"]) for results in f7]
        unit["f7"] = f7_comparison(runs, [r for seed, seed_runs in enumerate(v1) for r in seed_runs if r["seed"] == seed])
    return unit


def _substitutions(per_seed: list[dict]) -> dict:
    """{requested SPM arm: [the vocabulary that stood in, per seed]} over the experiments of a unit."""
    out = {}
    for results in per_seed:
        for requested, actual in results["substituted"].items():
            out.setdefault(requested, []).append(actual)
    return out


def f7_comparison(v0_runs: list[dict], v1_runs: list[dict]) -> list[dict]:
    """Per SID arm and setting: CTR AUC and CTR/1D AUC with v0's and v1's SIDs, and the paired % change v1/v0."""
    v0 = {(r["label"], r["use_history"], r["seed"]): r for r in v0_runs}
    rows = {}
    for r in v1_runs:
        base = v0.get((r["label"], r["use_history"], r["seed"]))
        if base is not None:
            rows.setdefault((r["label"], r["use_history"]), []).append((base, r))
    out = []
    for (label, use_history), pairs in rows.items():
        row = {"label": label, "use_history": use_history, "seeds": [b["seed"] for b, _ in pairs]}
        for key in ("ctr_auc", "ctr_1d_auc"):
            row[f"v0_{key}"] = stats.interval([b[key] for b, _ in pairs])
            row[f"v1_{key}"] = stats.interval([v[key] for _, v in pairs])
            row[f"{key}_change_pct"] = stats.interval([100.0 * (v[key] / b[key] - 1.0) for b, v in pairs])
        out.append(row)
    return out


def _movielens_unit(layout: RunLayout, config: StudyConfig, rqvae: RQVAEConfig, train: day_loop.TrainConfig,
                    beam_args, log) -> dict:
    """MovieLens with model seeds; the RQ-VAE learns from the movies first rated in the training window."""
    log("==== MovieLens ====")
    ml_config = movielens.MovieLensConfig(data_dir=config.movielens_dir)

    def make_data():
        movielens.run(ml_config, layout.data)
        last_train_day = split_days(layout.data.logged_days()).train_window[-1]
        train_rqvae.run(layout, rqvae, max_first_day=last_train_day, log=lambda *_: None)

    _set_up(layout, {"movielens": dataclasses.asdict(ml_config), "rqvae": dataclasses.asdict(rqvae)}, beam_args, log,
            make_data)
    arms = f"{config.arms},{experiment.MATCHED}" if config.matched_world else config.arms
    unit = _bootstrapped_unit(layout, config, arms, train, beam_args, log)
    return {"name": "movielens", "kind": "real", **unit}


def _one_draw_unit(world: str, layout: StudyLayout, config: StudyConfig, rqvae: RQVAEConfig,
                   train: day_loop.TrainConfig, beam_args, log) -> dict:
    """One draw of a simulated world (seed 0) with model seeds 0..S-1, bootstrapped like MovieLens: for a
    world too large to draw S times."""
    world_layout = layout.world(world, 0)
    simulator = config.simulator(world, 0)
    log(f"==== world {world}, one draw ({simulator.num_items:,} items, {simulator.num_days} days x "
        f"{simulator.impressions_per_day:,} impressions), model seeds 0..{config.seeds - 1} ====")
    _set_up_world(world_layout, simulator, dataclasses.replace(rqvae, seed=0), beam_args, log)
    unit = _bootstrapped_unit(world_layout, config, config.arms, dataclasses.replace(train, seed=0), beam_args, log)
    return {"name": f"{world}_{simulator.num_items // 1000}k", "kind": "simulator",
            "balance": SimulatorConfig(world=world).balance, **unit}


def _bootstrapped_unit(layout: RunLayout, config: StudyConfig, arms: str, train: day_loop.TrainConfig, beam_args,
                       log) -> dict:
    """The arms on one data set with model seeds 0..S-1; intervals from a bootstrap over users and seeds."""
    results = experiment.run(layout, experiment.ExperimentConfig(arms=arms, seeds=config.seeds, history=config.history),
                             train, beam_args, log=log)
    runs = experiment.by_requested_name(results["runs"], results["substituted"])
    rows = experiment.with_aa_differences(experiment.summarise(runs), runs)
    sid_quality = files.read_json(RQVAELayout(layout.rqvae).sid_quality)
    # F2's and F4's arm-against-arm changes get the users' noise too, from the same replicates.
    compared = findings.compared_pairs({"rows": rows, "sid_quality": sid_quality})
    against = tuple((arm["label"], other["label"]) for arm, other in compared)
    rows = bootstrap.with_user_bootstrap(rows, runs, runs[0]["days"], config.bootstrap_replicates, against=against)
    return {"seeds": config.seeds,
            "interval": f"percentile bootstrap over users and seeds ({config.bootstrap_replicates} replicates), "
                        "paired across arms",
            "baseline": results["baseline"], "substituted": _substitutions([results]), "eval_from": results["eval_from"],
            "days": runs[0]["days"], "rows": rows, "runs": runs, "oracle": results["oracle"],
            "run_dirs": [layout.root], "lookups": files.read_json(layout.lookups),
            "sid_quality": sid_quality, "fingerprint": results["fingerprint"]}


def _mean_oracle(oracles: list[dict | None]) -> dict | None:
    if not oracles or any(o is None for o in oracles):
        return None
    return {key: sum(o[key] for o in oracles) / len(oracles) for key in oracles[0]}


def describe(results: dict) -> str:
    lines = []
    for unit in results["units"]:
        lines.append(f"== {unit['name']} ({unit['interval']})")
        lines += experiment.format_rows(unit)
    run_dir = os.path.dirname(os.path.dirname(results["path"]))
    lines.append(f"results: {results['path']}\nreport:  sidrec report --run_dir {run_dir}")
    return "\n".join(lines)
