"""`sidrec experiment`: the paper's comparison of item representations on the same logged days.

Each arm is transformed (once per representation; a transform output made from the same inputs is
reused) and trained day by day like `sidrec train`, with and without the history (the dense
baseline only without, as in the paper). An arm's score is the mean over the evaluation days
(pipeline.core.protocol: each evaluated before the model trains on it) of its CTR AUC and CTR/1D AUC;
the table gives the % change against the baseline arm (`--baseline`, default the first random_hash
arm) in the same setting, beside the simulator's oracle AUC when the logs carry the true click
probability. Every run records its fingerprint; an unchanged rerun reuses every output.
"""

import dataclasses
import math
import os

import numpy as np

from beam_jobs import transform
from pipeline.core import files, fingerprint, slices, stability, stats
from pipeline.core.cards import read_sid_stats
from pipeline.core.layout import RankerLayout, RunLayout
from pipeline.core.representation import KINDS, SIZE_FIELD, Kind, parse_kind, representation_name, split_kind
from pipeline.sid.spm_vocab import VocabularyUnsupported
from pipeline.stages import day_loop, plots
from pipeline.stages.configs import DEFAULT_ARMS, HISTORY_SETTINGS, ExperimentConfig  # noqa: F401

# In --arms, stands for matched_arms: the study's table sizes for the run's L and K.
MATCHED = "matched"


@dataclasses.dataclass(frozen=True)
class Arm:
    """One row of the table: a representation (and, for dense, the depth multiplier of the trunk)."""

    kind: str  # a name of KINDS (a hybrid's with +id)
    buckets: int = 8192
    ngram: int = 1
    vocab_size: int = 8192
    depth_multiplier: float = 1.0
    spm_dropout: float = 0.0
    prefix_lengths: tuple[int, ...] = ()
    id_buckets: int = 0

    @property
    def representation(self) -> str:
        return representation_name(self.kind, self.buckets, self.ngram, self.vocab_size, self.prefix_lengths,
                                   self.id_buckets)

    def history_settings(self, asked: tuple[bool, ...] = (True, False)) -> tuple[bool, ...]:
        """The settings of `asked` this arm trains in: a dense arm has no history, so only without."""
        return (False,) if parse_kind(self.kind) is Kind.DENSE else asked

    def train_config(self, config: day_loop.TrainConfig) -> day_loop.TrainConfig:
        """The training settings of this arm: `config` with the arm's trunk depth and SPM dropout."""
        return dataclasses.replace(config, depth_multiplier=self.depth_multiplier, spm_dropout=self.spm_dropout)

    @property
    def label(self) -> str:
        """The arm's name in the table (without the history suffix)."""
        return day_loop.run_label(self.representation, self.train_config(day_loop.TrainConfig()))


def matched_table_sizes(num_levels: int, codebook_size: int) -> list[int]:
    """The x-axis of the paper's Figures 2-3: unigram's L x K rows, bigram's (L/2) x K^2, one size between
    (their geometric mean) and one above (twice bigram's)."""
    if num_levels % 2:
        raise ValueError(f"matched table sizes need bigram SIDs: L={num_levels} is odd")
    unigram, bigram = num_levels * codebook_size, (num_levels // 2) * codebook_size ** 2
    return [unigram, int(round(math.sqrt(unigram * bigram))), bigram, 2 * bigram]


def matched_arms(num_levels: int, codebook_size: int) -> str:
    """The study's arms: dense at depth 1x, 1.5x, 2x; unigram and bigram; random hashing and SPM at each
    matched table size (random hashing at unigram's size first, so it is the default baseline)."""
    sizes = matched_table_sizes(num_levels, codebook_size)
    arms = [f"{Kind.DENSE.value}:{m}" for m in (1, 1.5, 2)] + [f"{Kind.SID_NGRAM.value}:{n}" for n in (1, 2)]
    arms += [f"{Kind.RANDOM_HASH.value}:{size}" for size in sizes] + [f"{Kind.SID_SPM.value}:{size}" for size in sizes]
    return ",".join(arms)


ARM_OPTIONS = {"dropout": (Kind.SID_SPM, "spm_dropout", float),
               "lengths": (Kind.SID_PREFIX, "prefix_lengths", lambda text: tuple(int(n) for n in text.split("-"))),
               "ids": (None, "id_buckets", int)}


def parse_arms(text: str, id_buckets: int = 1024) -> list[Arm]:
    """"random_hash:8192,dense:1.5,sid_ngram:2,sid_spm:8192:dropout=0.1,sid_prefix+id:8192" -> arms.

    The value is B, M, N or V; options follow as `:NAME=X` (ARM_OPTIONS); a hybrid's ID table has
    `id_buckets` rows unless it says `ids=`.

    Raises:
      ValueError: naming the item that is not KIND[:VALUE][:OPTION=X...] with a known kind, numbers,
        and options of its kind.
    """
    arms = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind_text, _, rest = item.partition(":")
        value, *options = rest.split(":") if rest else [""]
        if kind_text not in KINDS:
            raise ValueError(f"arm {item!r}: kind must be one of {KINDS}")
        kind, hybrid = split_kind(kind_text)
        fields = {"id_buckets": id_buckets} if hybrid else {}
        try:
            if kind in SIZE_FIELD:
                fields.update({SIZE_FIELD[kind]: int(value)} if value else {})
            else:  # dense: the value is the depth multiplier
                fields["depth_multiplier"] = float(value or 1)
            for option in options:
                name, _, number = option.partition("=")
                if name not in ARM_OPTIONS or ARM_OPTIONS[name][0] not in (None, kind) or (name == "ids" and not hybrid):
                    raise KeyError(name)
                fields[ARM_OPTIONS[name][1]] = ARM_OPTIONS[name][2](number)
        except KeyError as e:
            raise ValueError(f"arm {item!r}: {e.args[0]!r} is not an option of {kind_text} (options: dropout= for "
                             "sid_spm, lengths= for sid_prefix, ids= for KIND+id)") from None
        except ValueError:
            raise ValueError(f"arm {item!r}: the value after ':' (and each option's) must be a number") from None
        arms.append(Arm(kind_text, **fields))
    if not arms:
        raise ValueError("no arms given")
    return arms


def baseline_arm(arms: list[Arm], baseline: str = "", id_buckets: int = 1024) -> Arm:
    """The arm the table is relative to: `baseline` (KIND[:VALUE], one of the arms), else the first random_hash.

    Raises:
      ValueError: the named baseline is not an arm, or no baseline is named and no arm is random_hash.
    """
    if baseline:
        [wanted] = parse_arms(baseline, id_buckets)
        if wanted not in arms:
            raise ValueError(f"baseline {baseline!r} is not one of the arms: add it to --arms")
        return wanted
    for arm in arms:
        if arm.kind == Kind.RANDOM_HASH:
            return arm
    raise ValueError("the table is relative to a baseline: add a random_hash arm (e.g. random_hash:8192) "
                     "or name one of the arms with --baseline")


def run(layout: RunLayout, experiment: ExperimentConfig, config: day_loop.TrainConfig, beam_args=(),
        log=print) -> dict:
    """Transforms, trains and compares every arm; writes RUN/metrics/experiment.json and a plot.

    Args:
      experiment: the arms, the baseline (default: the first random_hash arm), the first evaluation day
        (0: the protocol's default, the second half of the days), H, and the reuse policy.
      config: the ranker's training settings, shared by every arm.
    """
    arms = parse_arms(_expand_matched(layout, experiment.arms), experiment.id_buckets)
    base = baseline_arm(arms, experiment.baseline, experiment.id_buckets)
    if_changed = experiment.if_changed
    cards, fallbacks = {}, {}
    for arm in {arm.representation: arm for arm in arms}.values():
        try:
            cards[arm.representation] = _transform(layout, arm, experiment, beam_args, log)
        except VocabularyUnsupported as e:  # use the nearest vocabulary the training window supports
            fallback = fallbacks[arm.representation] = dataclasses.replace(arm, vocab_size=e.supported)
            log(f"== {arm.representation}: {e}; using {fallback.representation} instead")
            if fallback.representation not in cards:
                cards[fallback.representation] = _transform(layout, fallback, experiment, beam_args, log)
    substituted = {name: arm.representation for name, arm in fallbacks.items()}
    arms = list(dict.fromkeys(fallbacks.get(a.representation, a) for a in arms))
    base = fallbacks.get(base.representation, base)
    runs = []
    # One run per arm, history setting and seed.
    for arm, use_history, seed in ((a, h, config.seed + s) for a in arms
                                   for h in a.history_settings(HISTORY_SETTINGS[experiment.history])
                                   for s in range(experiment.seeds)):
        arm_config = dataclasses.replace(arm.train_config(config), use_history=use_history, seed=seed)
        run_dir = os.path.join(layout.ranker, day_loop.run_dir_name(arm.representation, arm_config))
        label = day_loop.run_label(arm.representation, arm_config)
        log(f"== train {label} ({run_dir})")
        history = day_loop.train(layout.transform_output(arm.representation), run_dir, arm_config,
                                 log=log, export_every_day=False, if_changed=if_changed)
        runs.append({"label": label, "arm": arm.label, "representation": arm.representation,
                     "use_history": use_history, "depth_multiplier": arm.depth_multiplier,
                     "spm_dropout": arm.spm_dropout, "seed": seed,
                     "is_baseline": arm == base, "run_dir": run_dir,
                     "fingerprint": fingerprint.read(run_dir)["fingerprint"],
                     "days": [e["evaluated_on_day"] for e in history],
                     "per_day": [{k: e[k] for k in ("evaluated_on_day", *SCORES, "cold_start_examples")}
                                 for e in history],
                     **{key: mean_over_days(history, key) for key in SCORES},
                     "slices": slices.over_days([e["slices"] for e in history if "slices" in e]),
                     "reliability": _reliability(run_dir, [e["evaluated_on_day"] for e in history]),
                     **probe_churn(run_dir, [e["evaluated_on_day"] for e in history]),
                     "last_day_ctr_auc": history[-1]["ctr_auc"], "last_day_ctr_1d_auc": history[-1]["ctr_1d_auc"]})
    card = cards[base.representation]
    runs = _relative_to_baseline(runs)
    results = {"baseline": base.label, "eval_from": card["eval_from"], "train_days": card["train_days"],
               "substituted": substituted,
               "seeds": experiment.seeds, "rows": with_aa_differences(summarise(runs), runs), "runs": runs,
               "oracle": _oracle(layout, runs[0]["days"]),
               "train_config": dataclasses.asdict(config),
               "fingerprint": fingerprint.Fingerprint([r["fingerprint"] for r in runs]).value}
    results["path"] = layout.experiment
    files.write_json(results["path"], results)
    results["plot"] = plots.experiment(results, layout.plot("experiment"))
    results["per_day_plot"] = plots.per_day(results, layout.plot("per_day"))
    return results


def aa_difference(run_a: str, run_b: str, days: list[int]) -> dict | None:
    """The A/A prediction difference of two runs of one arm (other seeds, same transform output): the mean
    |p_a - p_b| of their click probabilities over the evaluation days' impressions, overall and on
    cold-start impressions. None when a run kept no predictions (made before they were kept)."""
    differences, cold = [], []
    for day in days:
        paths = [RankerLayout(run).predictions(day) for run in (run_a, run_b)]
        if not all(files.exists(path) for path in paths):
            return None
        a, b = (files.load_npz(path) for path in paths)
        if a["click_probability"].shape != b["click_probability"].shape:
            raise ValueError(f"day {day}: {run_a} and {run_b} scored different impressions")
        differences.append(np.abs(a["click_probability"] - b["click_probability"]))
        cold.append(a["cold_start"])
    d, c = np.concatenate(differences), np.concatenate(cold)
    return {"overall": float(d.mean()), "cold_start": float(d[c].mean()) if c.any() else float("nan"),
            "impressions": int(d.size), "cold_start_impressions": int(c.sum())}


def with_aa_differences(rows: list[dict], runs: list[dict]) -> list[dict]:
    """Adds each row's A/A difference between its first two seeds, and their seed variance on the stability probe
    (None with one seed)."""
    for row in rows:
        group = [r for r in runs if r["label"] == row["label"] and r["use_history"] == row["use_history"]]
        several = len(group) > 1
        row["aa_difference"] = (aa_difference(group[0]["run_dir"], group[1]["run_dir"], group[0]["days"])
                                if several else None)
        row["seed_variance"] = (probe_seed_variance(group[0]["run_dir"], group[1]["run_dir"], group[0]["days"])
                                if several else None)
    return rows


# A run's churn on the stability probe, per slice (pipeline.core.stability), as run keys the rows and F8 read.
CHURN = tuple(f"churn_{name}" for name in stability.SLICES)


def _probes(run_dir: str, days: list[int]) -> list | None:
    paths = [RankerLayout(run_dir).probe_predictions(day) for day in days]
    return [files.load_npz(path) for path in paths] if all(files.exists(path) for path in paths) else None


def probe_churn(run_dir: str, days: list[int]) -> dict:
    """{churn_<slice>: mean |p_d - p_(d-1)| on the probe} of one run (slices without rows left out); {} for a run
    with one evaluation day or no probe kept."""
    kept = _probes(run_dir, days)
    if not kept or len(kept) < 2:
        return {}
    churn = stability.churn([k["click_probability"] for k in kept],
                            stability.probe_slices(kept[0]["tail"], kept[0]["new"]))
    return {f"churn_{name}": churn[name] for name in stability.SLICES if churn[name] is not None}


def probe_seed_variance(run_a: str, run_b: str, days: list[int]) -> dict | None:
    """Mean |p_a - p_b| on the probe between two runs of one arm (other seeds), per slice; None without probes."""
    a, b = _probes(run_a, days), _probes(run_b, days)
    if not a or not b:
        return None
    return stability.seed_variance([k["click_probability"] for k in a], [k["click_probability"] for k in b],
                                   stability.probe_slices(a[0]["tail"], a[0]["new"]))


def by_requested_name(runs: list[dict], substituted: dict) -> list[dict]:
    """`runs` named by the representation each arm asked for: a run of a stand-in SPM vocabulary (see
    `substituted`, requested -> run) appears once per arm it stood in for, with `ran_as` naming it. Runs of
    several experiments (seeds of a study) then line up even where their stand-ins differ in size."""
    stood_in = {}
    for requested, actual in substituted.items():
        stood_in.setdefault(actual, []).append(requested)
    out = []
    for r in runs:
        for requested in stood_in.get(r["representation"], [r["representation"]]):
            if requested == r["representation"]:
                out.append(r)
                continue
            out.append({**r, "representation": requested, "ran_as": r["representation"],
                        "label": r["label"].replace(r["representation"], requested, 1),
                        "arm": r["arm"].replace(r["representation"], requested, 1)})
    return out


def _expand_matched(layout: RunLayout, arms: str) -> str:
    """Replaces the word `matched` in an arm list by matched_arms for the run's SIDs (L and K from stats.json)."""
    items = [item.strip() for item in arms.split(",")]
    if MATCHED not in items:
        return arms
    stats = read_sid_stats(layout.sids)
    expanded = matched_arms(int(stats["num_levels"]), int(stats["codebook_size"]))
    return ",".join(expanded if item == MATCHED else item for item in items)


def _transform(layout: RunLayout, arm: Arm, experiment: ExperimentConfig, beam_args, log) -> dict:
    """Transforms (or reuses) one arm's representation; returns its protocol card."""
    log(f"== transform {arm.representation} (TF Transform on Beam)")
    summary = transform.run(transform.TransformConfig(
        data_dir=layout.data.root, sids=layout.sids, output=layout.transform_output(arm.representation),
        kind=arm.kind, buckets=arm.buckets, ngram=arm.ngram, vocab_size=arm.vocab_size,
        prefix_lengths=arm.prefix_lengths, id_buckets=arm.id_buckets,
        eval_from=experiment.eval_from, max_history=experiment.max_history, if_changed=experiment.if_changed),
        beam_args, log=log)
    return day_loop.read_protocol_card(summary["output"])


# What each run reports as its mean over the evaluation days; the first three also as % changes against the
# baseline (calibration is read against 1, not against another arm).
SCORES = ("ctr_auc", "ctr_1d_auc", "ctr_ne", "calibration")
CHANGES = ("ctr_auc", "ctr_1d_auc", "ctr_ne")


def _reliability(run_dir: str, days: list[int]) -> list[dict]:
    """Predicted against observed CTR by score decile over a run's evaluation days (its kept predictions)."""
    kept = [files.load_npz(RankerLayout(run_dir).predictions(day)) for day in days]
    return slices.reliability(np.concatenate([k["click"] for k in kept]),
                              np.concatenate([k["click_probability"] for k in kept]))


def mean_over_days(history: list[dict], key: str) -> float:
    """The mean of one metric over a run's evaluation days (NaN days, without cold start, left out)."""
    return float(np.nanmean([e[key] for e in history]))


def baseline_runs(runs: list[dict]) -> dict:
    """{(use_history, seed): the baseline's run} of an experiment's runs."""
    return {(r["use_history"], r.get("seed", 0)): r for r in runs if r["is_baseline"]}


def baseline_for(baselines: dict, use_history: bool, seed: int) -> dict:
    """The baseline run an arm is compared with: the same history setting and seed. A dense baseline has no
    run with history: arms with history are then compared with its run of that seed."""
    return baselines.get((use_history, seed)) or next(b for (_, s), b in baselines.items() if s == seed)


def _relative_to_baseline(runs: list[dict]) -> list[dict]:
    """Adds the % change against the baseline run of the same history setting and seed (baseline_for)."""
    baselines = baseline_runs(runs)
    for r in runs:
        base = baseline_for(baselines, r["use_history"], r.get("seed", 0))
        for key in CHANGES:
            if key in r and key in base:
                r[f"{key}_change_pct"] = 100.0 * (r[key] / base[key] - 1.0)
    return runs


def summarise(runs: list[dict]) -> list[dict]:
    """One row per arm and history setting: each metric and each % change as a mean with its 95% interval.

    The changes are paired: each seed's run against the baseline's run of the same seed.
    """
    rows = {}
    for r in runs:
        rows.setdefault((r["label"], r["use_history"]), []).append(r)
    summary = []
    for group in rows.values():
        first = group[0]
        row = {key: first[key] for key in ("label", "arm", "representation", "use_history", "depth_multiplier",
                                           "is_baseline")}
        row["spm_dropout"] = first.get("spm_dropout", 0.0)
        row["seeds"] = [r.get("seed", 0) for r in group]
        for key in (*SCORES, *(f"{k}_change_pct" for k in CHANGES), *CHURN, "last_day_ctr_auc",
                    "last_day_ctr_1d_auc"):
            if all(key in r for r in group):  # (runs recorded before NE and calibration have neither)
                row[key] = stats.interval([r[key] for r in group])
        if all(r.get("slices") for r in group):
            row["slices"] = {family: {name: {
                "impressions": float(np.mean([r["slices"][family][name]["impressions"] for r in group])),
                **{key: stats.interval([r["slices"][family][name][key] for r in group])
                   for key in ("ctr_auc", "ne", "calibration")
                   if all(r["slices"][family][name][key] is not None for r in group)}}
                for name in names} for family, names in group[0]["slices"].items()}
        if all(r.get("reliability") for r in group):  # each decile's predicted and observed CTR, over the seeds
            row["reliability"] = [{key: float(np.mean([c[key] for c in cells])) for key in cells[0]}
                                  for cells in zip(*(r["reliability"] for r in group))]
        if all("per_day" in r for r in group):  # the curves: each evaluation day, over the seeds
            row["per_day"] = [{"day": entries[0]["evaluated_on_day"],
                               **{key: stats.interval([e[key] for e in entries]) for key in SCORES
                                  if all(key in e for e in entries)}}
                              for entries in zip(*(r["per_day"] for r in group))]
        summary.append(row)
    return summary


def _oracle(layout: RunLayout, days: list[int]) -> dict | None:
    """Mean oracle AUC over the evaluated days (the simulator's true click probability), if known."""
    if not files.exists(layout.data.summary):
        return None
    per_day = {d["day"]: d for d in files.read_json(layout.data.summary)["per_day"]}
    if not all(d in per_day and "oracle_auc" in per_day[d] for d in days):
        return None
    return {"ctr_auc": float(np.mean([per_day[d]["oracle_auc"] for d in days])),
            "ctr_1d_auc": float(np.mean([per_day[d]["oracle_auc_cold_start"] for d in days]))}


def format_table(results: dict) -> str:
    """The paper's table: per arm and setting, the mean AUCs and the % change against the baseline."""
    days = results["runs"][0]["days"]
    several = results.get("seeds", 1) > 1
    lines = [f"mean over the evaluation days {days[0]}-{days[-1]}, each evaluated before the model trained on it"
             + ("" if several else f" (and day {days[-1]} alone)")
             + f"; vocabularies learned on days before {results['eval_from']} only; "
             f"% change vs {results['baseline']} in the same setting"]
    lines += format_rows(results) if several else _table_of_one_seed(results)
    if results["oracle"]:
        widths = (24, 28, 24) if several else (8, 8, 10)
        lines.append(f"{'oracle (true CTR)':<28} {'':>7} {results['oracle']['ctr_auc']:>{widths[0]}.4f} "
                     f"{'':>{widths[1]}} {results['oracle']['ctr_1d_auc']:>{widths[2]}.4f}")
    return "\n".join(lines)


def _table_of_one_seed(results: dict) -> list[str]:
    lines = [f"{'representation':<28} {'history':>7} {'CTR AUC':>8} {'change':>8} {'CTR/1D AUC':>10} {'change':>8}"
             f" {'last-day CTR AUC':>16} {'last-day CTR/1D':>15}"]
    for setting in (True, False):
        for r in (r for r in results["runs"] if r["use_history"] == setting):
            lines.append(f"{r['label']:<28} {'yes' if setting else 'no':>7} {r['ctr_auc']:>8.4f} "
                         f"{r['ctr_auc_change_pct']:>+7.2f}% {r['ctr_1d_auc']:>10.4f} {r['ctr_1d_auc_change_pct']:>+7.2f}%"
                         f" {r['last_day_ctr_auc']:>16.4f} {r['last_day_ctr_1d_auc']:>15.4f}")
    return lines


def format_rows(results: dict) -> list[str]:
    """The table's rows when every arm ran with several seeds: means, 95% intervals, paired changes.

    `results` needs rows, seeds and baseline: an experiment's results, or a study's unit.
    """
    lines = [f"{'representation':<28} {'history':>7} {'CTR AUC [95% CI]':>24} {'change [95% CI]':>28} "
             f"{'CTR/1D AUC [95% CI]':>24} {'change [95% CI]':>28}"]
    for setting in (True, False):
        for r in (r for r in results["rows"] if r["use_history"] == setting):
            changes = [("(baseline)" if r["is_baseline"] else stats.format_interval(r[key], 2, True))
                       for key in ("ctr_auc_change_pct", "ctr_1d_auc_change_pct")]
            lines.append(f"{r['label']:<28} {'yes' if setting else 'no':>7} {stats.format_interval(r['ctr_auc'], 4):>24} "
                         f"{changes[0]:>28} {stats.format_interval(r['ctr_1d_auc'], 4):>24} {changes[1]:>28}")
    lines.append(f"{results['seeds']} seeds per arm; changes paired by seed against {results['baseline']}; "
                 "n.s.: the 95% interval holds 0")
    measured = [r for r in results["rows"] if r.get("aa_difference")]
    if measured:
        lines.append("A/A prediction difference, mean |p(seed 1) - p(seed 2)| over the evaluation days: "
                     + "; ".join(f"{r['label']} {r['aa_difference']['overall']:.4f} (cold start "
                                 f"{r['aa_difference']['cold_start']:.4f})" for r in measured))
    churned = [r for r in results["rows"] if "churn_overall" in r]
    if churned:
        lines.append("Churn between consecutive daily models on the stability probe, mean |p_d - p_(d-1)|: " + "; ".join(
            f"{r['label']}{'' if r['use_history'] else ' (no history)'} {stats.format_interval(r['churn_overall'], 4)}"
            for r in churned))
    return lines


def describe(results: dict) -> str:
    """The table, and where the results and the plot are."""
    return (f"{format_table(results)}\nresults: {results['path']}\nplot:    {results['plot']}\n"
            f"per day: {results['per_day_plot']}")
