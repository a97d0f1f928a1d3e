"""Beam job: transform a logged day that arrived after a transform output was fitted, with its frozen graph.

The daily path (pipeline.stages.daily). What the training window taught (SPM vocabulary, analyzers,
popularity buckets) was fixed when `sidrec transform` fitted the output; a new day is read and checked
by the same row rules (rejected rows go to OUTPUT/rejected/day=NNNN/), joined with the current SID table
and corpus, transformed by the stored transform_fn and written to OUTPUT/transformed/day=NNNN/. Earlier
days are neither read nor rewritten. The card (representation.json) lists the day only once its files
are in place: the card is the commit, so a job killed midway leaves the output as it was and a rerun
redoes the day. Its bytes equal what the batch job writes for the same day (tests/test_daily.py).
"""

import contextlib
import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils.shared import Shared

from pipeline.core.tf_env import tf  # noqa: F401  (TensorFlow with Keras 2, before TF Transform)
import tensorflow_transform.beam as tft_beam  # noqa: I100  (after the TF set-up)

from beam_jobs.counters import job_counters
from beam_jobs.held_out_rows import WriteHeldOutRows
from beam_jobs.item_features_join import NAMESPACE
from beam_jobs.options import pipeline_options
from beam_jobs.record_batches_io import WriteTFRecordBatches
from beam_jobs.transform import SHUFFLE_JOIN_ABOVE, ReadCheckedLogs, join_step, tensor_adapter_config
from pipeline.core import contracts, files
from pipeline.core.cards import read_representation
from pipeline.core.examples import to_examples
from pipeline.core.layout import TRANSFORMED_SUFFIX, DataLayout, TransformLayout
from pipeline.core.publish import published, staging_path
from pipeline.core.representation import RepresentationConfig
from pipeline.data import log_io


def transform_day(output: str, data_dir: str, sids_dir: str, day: int, beam_args=(),
                  shuffle_join_above: int = SHUFFLE_JOIN_ABOVE, log=logging.info, held_out_per_mille: int = 0) -> dict:
    """Transforms `day` into the fitted output `output` and adds it to the card; with `held_out_per_mille`,
    writes the day's held-out rows too (beam_jobs.held_out_rows), in the same pass over the day.

    Returns:
      The day's counters (rows read, rejected, joined, items without a SID per role).

    Raises:
      ContractError: the day has no log files, or a file cannot be read as the log contract says
        (nothing changes then); the day is not after every day the output holds.
    """
    card = read_representation(output)
    config = RepresentationConfig(**card["config"])
    layout = DataLayout(data_dir)
    if card["days"] and day <= max(card["days"]):
        raise contracts.ContractError(f"day {day}: {output} already holds days up to {max(card['days'])}; a daily "
                                      "step only appends later days")
    out = TransformLayout(output)
    scratch = staging_path(out.tmp)
    # The item count the fitted job decided its join on (0 in a card that predates recording it).
    shuffle_join = int(card.get("items", 0)) > shuffle_join_above
    try:
        held_out_dir = out.held_out_day(held_out_per_mille, day) if held_out_per_mille else None
        with published(out.day_dir(day)) as day_staging, published(out.rejected_day(day)) as rejected_staging, \
                _published_if(held_out_dir) as held_out_staging:
            with beam.Pipeline(options=pipeline_options(beam_args, log)) as p, tft_beam.Context(temp_dir=scratch):
                logs = p | "ReadDay" >> ReadCheckedLogs(layout, day, config.max_history)
                joined = join_step(p, {day: logs.valid}, config, shuffle_join, sids_dir, layout.corpus, Shared())[day]
                transform_fn = p | "ReadTransformFn" >> tft_beam.ReadTransformFn(output)
                transformed, _ = (((joined, tensor_adapter_config(config)), transform_fn)
                                  | "Transform" >> tft_beam.TransformDataset(output_record_batches=True))
                _ = (transformed
                     | "Encode" >> beam.Map(lambda batch: to_examples(batch[0]))
                     | "Write" >> WriteTFRecordBatches(files.join(day_staging, "part"),
                                                       file_name_suffix=TRANSFORMED_SUFFIX))
                _ = logs.rejected | "WriteRejected" >> beam.io.WriteToText(files.join(rejected_staging, "part"),
                                                                           file_name_suffix=".jsonl")
                if held_out_per_mille:
                    _ = logs.valid | "HeldOutRows" >> WriteHeldOutRows(held_out_per_mille, held_out_staging)
    finally:
        if FileSystems.exists(scratch):
            FileSystems.delete([scratch])
    counters = job_counters(p.result, NAMESPACE)
    card["days"] = sorted(card["days"] + [day])
    card["eval_days"] = sorted(card["eval_days"] + [day])
    card.setdefault("daily", {})[str(day)] = {"counters": counters}
    card.setdefault("day_files", {})[str(day)] = log_io.day_signature(layout, day)
    with published(out.card) as staging:
        files.write_json(staging, card)
    log(f"transformed day {day} with the graph fitted on days {card['train_days'][0]}..{card['train_days'][-1]}: "
        f"{counters.get('rows_joined', 0):,} rows, {counters.get('rows_rejected', 0):,} rejected")
    return counters


def _published_if(path: str | None):
    """`published(path)`, or nothing to publish."""
    return published(path) if path else contextlib.nullcontext(None)
