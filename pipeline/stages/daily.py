"""`sidrec daily`: advance a run by each logged day it has not taken, one transaction a day.

For day d, in order (each step commits before the next starts, so a step killed anywhere and run
again ends as an uninterrupted one):
  1. SIDs: corpus items without one get it from the frozen RQ-VAE (incremental; skipped when none is new);
  2. transform: day d alone, with the graph fitted on the training window (beam_jobs.transform_day);
     its logs are checked by the row rules, rejected rows written aside, and the rows of the users held out of
     training written as they were logged (beam_jobs.held_out_rows); the card lists d once done;
  3. train: the ranker resumes from its last checkpoint, evaluates day d unseen, then fits on it
     (holding out --holdout_per_mille of the users), and exports the candidate RUN/ranker/<run>/export/d;
  4. bless: the candidate against the served version on the held-out rows the job wrote (pipeline.stages.bless;
     no process reads the whole day);
  5. publish: a blessed candidate trained through more days than the served version becomes the next
     integer version of the serving directory (RUN/serving/<model>, what servers watch); the newest
     --keep_versions stay. RUN/ranker/<run>/daily/day=NNNN.json records the step (its commit), with the
     lineage's health (pipeline.sid.sid_health): the day's line says "refresh advised" when a signal trips.
A candidate that is not published stays in the run's export directory for inspection.

Under `--strategy multi_worker` every worker runs the step: the chief (models.distribution.is_chief) does
1, 2, 4 and 5 and writes the record; the other workers wait for the chief's transform of each day, then
train with it (step 3 is one collective fit) and leave nothing behind.
"""

import os
import time

import numpy as np

from pipeline.core.tf_env import tf

from beam_jobs import held_out_rows as held_out_rows_job
from beam_jobs import materialize_sids, transform_day
from models import distribution
from pipeline.core import contracts, files
from pipeline.core import features as fk
from pipeline.core.cards import read_json
from pipeline.core.layout import ExportLayout, RankerLayout, RQVAELayout, RunLayout, SidTableLayout, TransformLayout
from pipeline.core.publish import list_versions, publish_version, published
from pipeline.core.representation import RepresentationConfig
from pipeline.data import log_io, sid_table_io
from pipeline.sid import sid_health
from pipeline.stages import bless, day_loop
from serving import model_config
from pipeline.stages.configs import DailyConfig  # noqa: F401  (re-exported)


# How long a worker waits for the chief's transform of a day before it gives up.
WORKER_WAIT_SECONDS = 3600


def run(layout: RunLayout, config: DailyConfig, train: day_loop.TrainConfig, checks: bless.BlessConfig,
        beam_args=(), log=print, strategy: tf.distribute.Strategy | None = None,
        health: sid_health.HealthThresholds = sid_health.HealthThresholds()) -> list[dict]:
    """Takes every pending day (see the module); returns one record per day taken (none on a worker that is
    not the chief)."""
    strategy = strategy or tf.distribute.get_strategy()
    if train.holdout_per_mille < 1:
        raise ValueError("--holdout_per_mille must be >= 1 for `sidrec daily`: a candidate is blessed on rows "
                         "neither it nor the served model trained on")
    transform_dir = layout.transform_output(config.representation)
    run_dir = os.path.join(layout.ranker, day_loop.run_dir_name(config.representation, train))
    serving = config.serving_dir or layout.serving(config.model_name)
    _retention(config)  # a bad --model_config_file fails here, before a day is taken
    taken = set(taken_days(transform_dir, run_dir))
    records = []
    todo = pending_days(layout, transform_dir, run_dir, config.day)
    if not distribution.is_chief(strategy):
        for day in todo:
            _wait_for_the_chiefs_transform(transform_dir, day)
            day_loop.train(transform_dir, run_dir, train, model_name=config.model_name, log=lambda *_: None,
                           export_every_day=False, export_days=todo, fit_verbose=0, strategy=strategy,
                           keep_probe=False)
        return []
    if not todo:
        log(describe_nothing_to_take(layout, transform_dir, serving))
    for day in todo:
        started = time.time()
        card = day_loop.read_protocol_card(transform_dir)
        if day not in card["days"]:
            log_io.day_files(layout.data, day)  # a day without log files stops here, before anything changes
            new_items = _materialise_new_items(layout, card, beam_args)
            transform_day.transform_day(transform_dir, layout.data.root, layout.sids, day, beam_args,
                                        log=lambda *_: None, held_out_per_mille=train.holdout_per_mille)
        else:
            new_items = 0  # transformed before a stop: the step goes on from training
        # Only the candidates of the days stepped are exported: the first step trains through every fitted day,
        # and an export of each of those would be blessed by nothing (seconds each).
        before = day_loop.trained_through(run_dir)  # a warm or cold start (`sidrec refresh`) stands at T-1
        history = day_loop.train(transform_dir, run_dir, train, model_name=config.model_name, log=lambda *_: None,
                                 export_every_day=False, export_days=todo, fit_verbose=0, strategy=strategy,
                                 keep_probe=False)
        [metrics] = [e for e in history if e["evaluated_on_day"] == day]
        lineage = day_loop.run_fingerprint(card, train).value  # the fitted transform and the training config
        record = _bless_and_publish(layout, run_dir, lineage, day, metrics, serving, config, train, checks, beam_args)
        record.update(day=day, new_items=new_items,
                      health=lineage_health(layout, card, run_dir, day, metrics, sorted(taken), health),
                      seconds=round(time.time() - started, 1),
                      trained_days=[d for d in card["days"] if before < d <= day] or [day])
        taken.add(day)
        with published(RankerLayout(run_dir).daily_step(day)) as staging:
            files.write_json(staging, record)
        log(describe_step(record))
        records.append(record)
    return records


def lineage_health(layout: RunLayout, card: dict, run_dir: str, day: int, metrics: dict, taken: list[int],
                   thresholds: sid_health.HealthThresholds) -> dict:
    """The step's SID health: the day's new items (corpus first day = `day`) against the items the lineage was
    fitted with (first day up to the fitted day), and CTR/1D AUC against the earlier steps'."""
    previous = [files.read_json(RankerLayout(run_dir).daily_step(d)).get("health", {}) for d in taken if d < day]
    sids = empty = np.zeros((0, 1), np.int64)
    lineage = everything = empty
    if RepresentationConfig(**card["config"]).has_sids:
        table = sid_table_io.read_sid_table(SidTableLayout(layout.sids).table)
        corpus = files.read_parquet(layout.data.corpus, [fk.ITEM_ID, fk.FIRST_DAY])
        first_day = dict(zip(corpus.column(fk.ITEM_ID).to_pylist(), corpus.column(fk.FIRST_DAY).to_pylist()))
        days = np.array([first_day.get(i, day + 1) for i in table.item_ids])
        sids, lineage, everything = table.sids[days == day], table.sids[days <= fitted_through(card)], table.sids[days <= day]
    return sid_health.day_health(sids, lineage, everything, metrics, previous, thresholds)


def _wait_for_the_chiefs_transform(transform_dir: str, day: int, timeout: float = WORKER_WAIT_SECONDS) -> None:
    """Returns once the transform output lists `day` (the chief transformed it).

    Raises:
      TimeoutError: it did not within `timeout` seconds (the chief failed or was stopped).
    """
    deadline = time.monotonic() + timeout
    while day not in day_loop.read_protocol_card(transform_dir)["days"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker: the chief did not transform day {day} into {transform_dir} within "
                               f"{timeout:.0f} s; run the step again on every worker")
        time.sleep(1)


def fitted_through(card: dict) -> int:
    """The last day the lineage was fitted on (transformed by `sidrec transform`, not by a daily step)."""
    return max(d for d in card["days"] if str(d) not in card.get("daily", {}))


def taken_days(transform_dir: str, run_dir: str) -> list[int]:
    """The days whose daily step finished (its record is written): the first step, on the day the lineage
    was fitted through, then one a day."""
    card = day_loop.read_protocol_card(transform_dir)
    steps = [fitted_through(card)] + [int(d) for d in card.get("daily", {})]
    return [d for d in steps if files.exists(RankerLayout(run_dir).daily_step(d))]


def pending_days(layout: RunLayout, transform_dir: str, run_dir: str, day: int = 0) -> list[int]:
    """The days to take: the day the lineage was fitted through, when no step has been taken yet (the first
    step trains through the fitted days and publishes version 1, so serving starts the day the lineage is
    fitted); logged days after the transform output's; and days it took daily whose step did not finish (no
    record). Refuses a history whose log files changed since they were transformed.

    Raises:
      ContractError: an earlier day's logs changed (a new lineage is needed), or `day` cannot be taken.
    """
    card = day_loop.read_protocol_card(transform_dir)
    changed = log_io.changed_days(card.get("day_files", {}), layout.data)
    if changed:
        raise contracts.ContractError(
            f"the logs of day(s) {', '.join(map(str, changed))} changed after {transform_dir} took them: a changed "
            "history needs a new lineage (`sidrec transform --if_changed rebuild`, then `sidrec daily`)")
    unfinished = [int(d) for d in card.get("daily", {}) if not files.exists(RankerLayout(run_dir).daily_step(int(d)))]
    first = [] if taken_days(transform_dir, run_dir) else [fitted_through(card)]
    new = [d for d in layout.data.logged_days() if d > max(card["days"])]
    todo = sorted(set(first + unfinished + new))
    if day:
        if day not in todo:
            raise contracts.ContractError(f"day {day} cannot be taken: pending days are {todo or 'none'} "
                                          f"(logged: {layout.data.logged_days()}, taken: {card['days']})")
        if todo[0] != day:
            raise contracts.ContractError(f"day {day} cannot be taken before day {todo[0]}: days go in order")
        return [day]
    return todo


def _materialise_new_items(layout: RunLayout, card: dict, beam_args) -> int:
    """Gives a SID to every corpus item without one (existing SIDs never change); 0 without new items."""
    if not RepresentationConfig(**card["config"]).has_sids:
        return 0
    corpus_ids = set(files.read_parquet(layout.data.corpus, [fk.ITEM_ID]).column(fk.ITEM_ID).to_pylist())
    known = set(files.read_parquet(SidTableLayout(layout.sids).table, [fk.ITEM_ID]).column(fk.ITEM_ID).to_pylist())
    new = len(corpus_ids - known)
    if new:
        model = card.get("rqvae", {}).get("export") or RQVAELayout(layout.rqvae).export
        materialize_sids.run(materialize_sids.MaterializeConfig(corpus=layout.data.corpus, model=model,
                                                                output=layout.sids, existing_table=layout.sids,
                                                                append=True), beam_args)
    return new


def served_version(serving: str) -> tuple[str | None, dict | None]:
    """The version a server watching `serving` serves (the newest) and its publication card."""
    versions = list_versions(serving)
    if not versions:
        return None, None
    path = os.path.join(serving, str(versions[-1]))
    card_path = ExportLayout(path).publication
    return path, (read_json(card_path, "publication card", "sidrec daily") if files.exists(card_path) else {})


def held_out_rows(layout: RunLayout, transform_dir: str, day: int, per_mille: int, beam_args=()):
    """The day's held-out rows, as the Beam job that read the day wrote them (the daily transform), or as a job
    run for them now (the day the lineage was fitted through, transformed by the batch job)."""
    directory = TransformLayout(transform_dir).held_out_day(per_mille, day)
    max_history = RepresentationConfig(**day_loop.read_protocol_card(transform_dir)["config"]).max_history
    if not files.exists(directory):
        held_out_rows_job.run(layout.data.root, day, per_mille, directory, max_history, beam_args, log=lambda *_: None)
    return held_out_rows_job.read(directory, day, max_history)


def _bless_and_publish(layout: RunLayout, run_dir: str, lineage: str, day: int, metrics: dict, serving: str,
                       config: DailyConfig, train: day_loop.TrainConfig, checks: bless.BlessConfig,
                       beam_args=()) -> dict:
    candidate = os.path.join(RankerLayout(run_dir).export, str(day))
    served, served_card = served_version(serving)
    if served_card and served_card.get("lineage") == lineage and served_card.get("trained_through_day") == day:
        # Published before a stop, not yet recorded.
        return {"metrics": _metrics(metrics), "blessing": served_card.get("blessing"),
                "published": served_card["version"], "candidate": candidate}
    rows = held_out_rows(layout, layout.transform_output(config.representation), day, train.holdout_per_mille,
                         beam_args)
    verdict = bless.bless(candidate, served, rows, bless.ItemFeatures(layout.sids, layout.data.corpus), checks)
    record = {"metrics": _metrics(metrics), "blessing": verdict, "published": None, "candidate": candidate}
    behind = served_card is not None and served_card.get("trained_through_day", 0) >= day
    if verdict["blessed"] and behind:
        record["not_published"] = (f"the served version {served_card['version']} is trained through day "
                                   f"{served_card['trained_through_day']}: serving never goes back")
    elif verdict["blessed"]:
        record["published"] = publish_version(
            candidate, serving, {"lineage": lineage, "run": run_dir, "source": candidate, "trained_through_day": day,
                                 "representation": config.representation, "blessing": verdict},
            lambda version_dir: ExportLayout(version_dir).publication, *_retention(config))
    return record


def _retention(config: DailyConfig) -> tuple[int, set[int]]:
    """(how many newest versions to keep, the versions never to delete), agreeing with the servers' config."""
    if not config.model_config_file:
        return config.keep_versions, set()
    named, latest = model_config.versions_in_use(model_config.read_model_config_file(config.model_config_file),
                                                 config.model_name)
    return max(config.keep_versions, latest), named


def _metrics(entry: dict) -> dict:
    return {k: entry[k] for k in ("ctr_auc", "ctr_1d_auc", "engagement_rmse", "examples", "cold_start_examples")}


def describe_nothing_to_take(layout: RunLayout, transform_dir: str, serving: str) -> str:
    """The line of a run with no day to take: the days taken, the version served, the day expected next."""
    card = day_loop.read_protocol_card(transform_dir)
    served, served_card = served_version(serving)
    if served is None:
        serving_now = f"nothing is served from {serving}"
    else:
        through = (served_card or {}).get("trained_through_day")
        serving_now = (f"{serving} serves version {os.path.basename(served)}"
                       + (f" (trained through day {through})" if through is not None else ""))
    last = max(card["days"])
    return (f"nothing to take: the run has taken days {_days(card['days'])}; {serving_now}; the next step takes day "
            f"{last + 1} once its logs are in {layout.data.day_dir(last + 1)}")


def _days(days: list[int]) -> str:
    """1-4 for consecutive days, else the list."""
    days = sorted(days)
    if len(days) > 1 and days == list(range(days[0], days[-1] + 1)):
        return f"{days[0]}-{days[-1]}"
    return ", ".join(map(str, days))


def describe_step(record: dict) -> str:
    """One line per day: metrics, blessed or not and why, version published, time taken."""
    m = record["metrics"]
    if record["published"] is not None:
        outcome = f"published version {record['published']}"
    else:
        outcome = "not published" + (f" ({record['not_published']})" if record.get("not_published") else "")
    trained = record.get("trained_days", [record["day"]])
    first = f" (first step of the lineage: trained on days {_days(trained)})" if len(trained) > 1 else ""
    tripped = record.get("health", {}).get("tripped", [])
    advice = f"; refresh advised: {'; '.join(tripped)}" if tripped else ""
    return (f"day {record['day']}{first}: CTR AUC {m['ctr_auc']:.4f}, CTR/1D AUC {m['ctr_1d_auc']:.4f}; "
            f"{bless.describe(record['blessing'])}; {outcome}; {record['new_items']:,} new item(s) given SIDs; "
            f"{record['seconds']:.0f} s{advice}")
