"""Beam job: the held-out rows of a logged day, the rows `sidrec daily` blesses a candidate on.

The rows of the users the day loop leaves out of a day's training (pipeline.core.protocol.held_out),
after the log contract's row rules, written back as raw tf.Example log rows. The daily transform of a
day (beam_jobs.transform_day) writes them in the pass that reads the day; this job reads a day for them
alone (the day the lineage was fitted through, transformed by the batch job). Either way no process
reads a whole day: on Dataflow the launcher reads only the held-out share.
"""

import logging

import apache_beam as beam
import pyarrow as pa

from beam_jobs.options import pipeline_options
from beam_jobs.transform import ReadCheckedLogs
from pipeline.core import features as fk
from pipeline.core import files
from pipeline.core.contracts import ContractError
from pipeline.core.examples import to_examples
from pipeline.core.protocol import held_out_users
from pipeline.core.publish import published
from pipeline.core.records import Impressions
from pipeline.core.layout import DataLayout
from pipeline.data import log_io

SUFFIX = ".tfrecord.gz"


def held_out_examples(element, per_mille: int):
    """(day, RecordBatch of checked log rows) -> the held-out rows as serialized tf.Examples."""
    day, batch = element
    mask = held_out_users(batch.column(fk.USER_ID).flatten().to_pylist(), day, per_mille)
    if mask.any():
        yield from to_examples(batch.filter(pa.array(mask)))


@beam.ptransform_fn
def WriteHeldOutRows(valid, per_mille: int, directory: str):  # noqa: N802 (Beam composite)
    """PCollection of (day, RecordBatch) of one day's checked rows -> TFRecord shards under `directory`."""
    return (valid
            | "HeldOut" >> beam.FlatMap(held_out_examples, per_mille)
            | "WriteHeldOut" >> beam.io.WriteToTFRecord(files.join(directory, "part"), file_name_suffix=SUFFIX))


def run(data_dir: str, day: int, per_mille: int, directory: str, max_history: int = fk.DEFAULT_MAX_HISTORY,
        beam_args=(), log=logging.info) -> str:
    """Reads `day` of the logs under `data_dir` and publishes its held-out rows to `directory`."""
    with published(directory) as staging:
        with beam.Pipeline(options=pipeline_options(beam_args, log)) as p:
            logs = p | "ReadDay" >> ReadCheckedLogs(DataLayout(data_dir), day, max_history)
            _ = logs.valid | "HeldOutRows" >> WriteHeldOutRows(per_mille, staging)
    return directory


def read(directory: str, day: int, max_history: int = fk.DEFAULT_MAX_HISTORY) -> Impressions:
    """The held-out rows a job wrote to `directory` (the shards with rows; at least one).

    Raises:
      ContractError: no held-out row at all (raise --holdout_per_mille: nothing to bless on).
    """
    shards = [path for path in sorted(files.glob(files.join(directory, "part*" + SUFFIX)))
              if next(log_io.read_tfrecord_batches(path, 1), None)]
    if not shards:
        raise ContractError(f"{directory}: day {day} has no held-out row to bless a candidate on; "
                            "raise --holdout_per_mille")
    return Impressions.concatenate([log_io.read_log_file(path, day, max_history) for path in shards])
