"""`sidrec simulate`: run the simulator and write its corpus, logs, ground truth and summary."""

import logging

import numpy as np
import pyarrow as pa

from pipeline.data import corpus_io
from pipeline.data import log_io
from pipeline.data import log_summary
from pipeline.stages import plots
from pipeline.core import features as fk
from pipeline.core import files
from pipeline.core.records import Corpus, Impressions
from pipeline.core.layout import RunLayout
from pipeline.data.simulator import SimulatedData, SimulatorConfig, arrivals, simulate


def to_corpus(data: SimulatedData) -> Corpus:
    return Corpus(item_ids=data.item_ids.astype(object), embeddings=data.embeddings,
                  first_day=data.first_day.astype(np.int64))


def to_impressions(data: SimulatedData, rows: np.ndarray | slice = slice(None)) -> Impressions:
    history = data.history[rows]
    valid = history >= 0  # -1 pads are at the end of each row (most recent first)
    return Impressions(
        user_id=data.user_ids[data.user[rows]].astype(object),
        watch_item_id=data.item_ids[data.watch[rows]].astype(object),
        candidate_item_id=data.item_ids[data.candidate[rows]].astype(object),
        history_values=data.item_ids[history[valid]].astype(object),
        history_lengths=valid.sum(1).astype(np.int64),
        click=data.click[rows], engagement=data.engagement[rows], day=data.day[rows],
        true_ctr=data.true_ctr[rows])


def write_truth(path: str, data: SimulatedData, items: np.ndarray | slice = slice(None)) -> None:
    columns = {fk.ITEM_ID: pa.array(data.item_ids[items].astype(str))}
    for level in range(data.topic_path.shape[1]):
        columns[f"topic_level_{level + 1}"] = pa.array(data.topic_path[items, level])
    columns["quality"] = pa.array(data.quality[items])
    columns["popularity"] = pa.array(data.popularity[items])
    files.write_parquet(pa.table(columns), path)


def run(config: SimulatorConfig, run_layout: RunLayout, through_day: int = 0) -> dict:
    """Simulates and writes everything under the run's data/ (a plot in its report/); returns the summary.

    With `through_day` D, the world is the same but only what exists by day D is written: the logs of days
    1..D and the items first seen by then. Run again with a later D (same flags otherwise) and the next days
    land, the earlier files byte for byte as they were: days arriving as they do for the daily loop.
    """
    if not 0 <= through_day <= config.num_days:
        raise ValueError(f"--through_day must be in [0, num_days {config.num_days}] (0: every day), got {through_day}")
    layout = run_layout.data
    logging.info("simulating %d items, %d days x %d impressions (seed %d)", config.num_items,
                 config.num_days, config.impressions_per_day, config.seed)
    data = simulate(config)
    last_day = through_day or config.num_days
    exists = data.first_day <= last_day
    corpus = to_corpus(data)
    if through_day:
        corpus = Corpus(item_ids=corpus.item_ids[exists], embeddings=corpus.embeddings[exists],
                        first_day=corpus.first_day[exists])
    corpus_io.write_corpus(layout.corpus, corpus)
    write_truth(layout.truth, data, exists)

    def written_days():  # one day's impressions (with their id strings) in memory at a time
        for day in np.unique(data.day[data.day <= last_day]):
            impressions = to_impressions(data, data.day == day)
            path = log_io.write_day(layout, int(day), impressions)
            logging.info("day %d: wrote %s", day, path)
            yield impressions

    summary = log_summary.summarise_parts(written_days(), corpus)
    summary["simulator_config"] = {k: list(v) if isinstance(v, tuple) else v
                                   for k, v in vars(config).items()}
    files.write_json(layout.summary, summary)
    summary["plot"] = plots.log_summary(summary, run_layout.plot("simulated_logs"))
    return summary


def write_arrivals(config: SimulatorConfig, run_layout: RunLayout, count: int) -> Corpus:
    """Writes `count` items of the world that arrive the day after its logs end (data/arrivals.parquet)."""
    item_ids, embeddings = arrivals(config, count)
    corpus = Corpus(item_ids=item_ids, embeddings=embeddings, first_day=np.full(count, config.num_days + 1, np.int64))
    corpus_io.write_corpus(run_layout.data.arrivals, corpus)
    return corpus


def describe(summary: dict, run_layout: RunLayout) -> str:
    layout = run_layout.data
    return (log_summary.format_summary(summary) + "\n"
            f"corpus: {layout.corpus}\nlogs:   {layout.logs}\nsummary: {layout.summary}\nplot:   {summary['plot']}")
