"""The impression logs: TFRecord files of tf.Example, one partition per day (logs/day=NNNN/).

Readers check every row with the log contract's rules (`pipeline.core.row_rules`, the same code
as `sidrec validate` and the transform job): pass `rejects_path` to write unusable rows aside
(counted, with the reason); without it the first bad row raises.
"""

from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from pipeline.core.tf_env import tf
from tfx_bsl.coders import example_coder

from pipeline.core import features as fk
from pipeline.core import files
from pipeline.core.arrow_lists import list_array, scalar_list_array
from pipeline.core.examples import to_examples
from pipeline.core.contracts import ContractError, RejectSink
from pipeline.core.layout import LOG_FILE_PATTERN, DataLayout
from pipeline.core.publish import published
from pipeline.core.records import Impressions
from pipeline.core.row_rules import check_log_batch, log_rejection

_DECODE_BATCH = 8192


def encode_examples(impressions: Impressions) -> list[bytes]:
    """Serialises impressions as tf.Example protos (C++ encoder of tfx_bsl; no per-row Python)."""
    binary = pa.large_binary()
    columns = {
        fk.USER_ID: scalar_list_array(impressions.user_id.astype(bytes), binary),
        fk.WATCH_ITEM_ID: scalar_list_array(impressions.watch_item_id.astype(bytes), binary),
        fk.CANDIDATE_ITEM_ID: scalar_list_array(impressions.candidate_item_id.astype(bytes), binary),
        fk.HISTORY_ITEM_IDS: list_array(impressions.history_values.astype(bytes),
                                         impressions.history_lengths, binary),
        fk.CLICK: scalar_list_array(impressions.click.astype(np.int64), pa.int64()),
        fk.ENGAGEMENT: scalar_list_array(impressions.engagement.astype(np.float32), pa.float32()),
        fk.DAY: scalar_list_array(impressions.day.astype(np.int64), pa.int64()),
    }
    if impressions.true_ctr is not None:
        columns[fk.TRUE_CTR] = scalar_list_array(impressions.true_ctr.astype(np.float32), pa.float32())
    batch = pa.RecordBatch.from_arrays(list(columns.values()), list(columns.keys()))
    return to_examples(batch)


def write_tfrecord(path: str, records: Iterable[bytes]) -> None:
    """Writes GZIP TFRecords atomically (a reader never sees a half-written file)."""
    with published(path) as staging, tf.io.TFRecordWriter(staging, options="GZIP") as writer:
        for record in records:
            writer.write(record)


def write_day(layout: DataLayout, day: int, impressions: Impressions, batch_rows: int = _DECODE_BATCH) -> str:
    """Writes one day's impressions, encoded `batch_rows` at a time (never the whole day as records)."""
    path = layout.day_file(day)
    batches = (encode_examples(impressions.slice(start, start + batch_rows))
               for start in range(0, impressions.size, batch_rows))
    write_tfrecord(path, (record for batch in batches for record in batch))
    return path


def read_tfrecord_batches(path: str, batch_size: int = _DECODE_BATCH) -> Iterator[list[bytes]]:
    compression = "GZIP" if path.endswith(".gz") else ""
    dataset = tf.data.TFRecordDataset(path, compression_type=compression).batch(batch_size)
    try:
        for batch in dataset.as_numpy_iterator():
            yield list(batch)
    except tf.errors.DataLossError as e:
        raise ContractError(f"{path}: corrupt or truncated TFRecord file ({e.message})") from e


def decode_log_records(decoder, records: list[bytes], source: str, first_row: int) -> pa.RecordBatch:
    """Serialized tf.Examples -> a RecordBatch (tfx_bsl decoder), or an error naming the file and rows."""
    try:
        return decoder.DecodeBatch(records)
    except Exception as e:  # tfx_bsl raises plain RuntimeError on malformed protos
        raise ContractError(f"{source}: rows {first_row}..{first_row + len(records) - 1} "
                            f"are not valid tf.Example records ({e})") from e


def _validate_log_batch(batch: pa.RecordBatch, source: str, first_row: int, expected_day: int | None,
                        max_history: int, sink: RejectSink, serialized: list[bytes]) -> Impressions:
    checked = check_log_batch(batch, source, expected_day, max_history)
    for row in sorted(checked.failures):
        field, reason = checked.failures[row]
        sink.reject(*log_rejection(source, first_row + row, field, reason, serialized[row]))
    return checked.impressions


def read_log_file(path: str, expected_day: int | None = None, max_history: int = fk.DEFAULT_MAX_HISTORY,
                  sink: RejectSink | None = None) -> Impressions:
    """Reads and validates one TFRecord file of tf.Example impressions.

    Raises:
      ContractError: on a file-level problem, or a bad row when the sink is strict.
    """
    sink = sink or RejectSink()
    if not files.exists(path):
        raise ContractError(f"{path}: no such file")
    decoder = example_coder.ExamplesToRecordBatchDecoder()
    parts, first_row = [], 0
    for serialized in read_tfrecord_batches(path):
        batch = decode_log_records(decoder, serialized, path, first_row)
        parts.append(_validate_log_batch(batch, path, first_row, expected_day, max_history, sink, serialized))
        first_row += len(serialized)
    if first_row == 0:
        raise ContractError(f"{path}: file is empty (no impression records)")
    return Impressions.concatenate(parts)


def day_files(layout: DataLayout, day: int) -> list[str]:
    found = files.files_in(layout.day_dir(day), LOG_FILE_PATTERN)
    if not found:
        raise ContractError(f"{layout.day_dir(day)}: no files matching {LOG_FILE_PATTERN}")
    return found


def day_signature(layout: DataLayout, day: int) -> list[list]:
    """[file name, size] of a day's log files: what a later run compares, without reading the bytes."""
    return [[files.basename(path), files.size(path)] for path in day_files(layout, day)]


def changed_days(recorded: dict, layout: DataLayout) -> list[int]:
    """The days of `recorded` ({day: day_signature}) whose log files have changed since (by name and size)."""
    return [int(day) for day, signature in sorted(recorded.items(), key=lambda kv: int(kv[0]))
            if day_signature(layout, int(day)) != signature]


def read_logs(layout: DataLayout, days: Iterable[int] | None = None, max_history: int = fk.DEFAULT_MAX_HISTORY,
              rejects_path: str | None = None) -> Impressions:
    """Reads and validates the impression logs of the given days (default: every day present).

    Raises:
      ContractError: if a day has no files, on a file-level problem, or a bad row in strict mode.
    """
    present = layout.logged_days()
    days = present if days is None else list(days)
    missing = sorted(set(days) - set(present))
    if missing:
        raise ContractError(f"{layout.logs}: no partition for days {missing}; present: {present}")
    with RejectSink(rejects_path) as sink:
        parts = [read_log_file(path, day, max_history, sink) for day in days for path in day_files(layout, day)]
    return Impressions.concatenate(parts)
