"""Readers and writers of the corpus (Parquet) and the day-partitioned impression logs (TFRecord).

Readers validate every row against the contracts in `pipeline.core.contracts`: pass `rejects_path` to
write unusable rows aside (counted, with the reason); without it the first bad row raises.
"""

import base64
import dataclasses
import glob
import os
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core import contracts
from pipeline.core import features as fk
from pipeline.core.contracts import ContractError, Rejection, RejectSink
from pipeline.core.layout import LOG_FILE_PATTERN, DataLayout

_DECODE_BATCH = 8192


@dataclasses.dataclass
class Corpus:
    """Items with their content embeddings; rows aligned across the arrays."""

    item_ids: np.ndarray  # object (str) [N]
    embeddings: np.ndarray  # float32 [N, D]
    first_day: np.ndarray  # int64 [N]
    titles: np.ndarray | None = None  # object (str) [N]

    def __post_init__(self):
        n = len(self.item_ids)
        if self.embeddings.ndim != 2 or len(self.embeddings) != n or len(self.first_day) != n:
            raise ValueError(f"corpus arrays disagree: {n} ids, embeddings {self.embeddings.shape}, "
                             f"{len(self.first_day)} first_day")

    @property
    def size(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]


@dataclasses.dataclass
class Impressions:
    """Impression rows; the history is ragged: flat values plus one length per row."""

    user_id: np.ndarray
    watch_item_id: np.ndarray
    candidate_item_id: np.ndarray
    history_values: np.ndarray
    history_lengths: np.ndarray
    click: np.ndarray
    engagement: np.ndarray
    day: np.ndarray
    true_ctr: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.day)

    def history(self, row: int) -> list[str]:
        start = int(self.history_lengths[:row].sum())
        return list(self.history_values[start:start + int(self.history_lengths[row])])

    def select(self, rows: np.ndarray) -> "Impressions":
        """The impressions where the boolean mask `rows` is true."""
        picked = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[rows])
                  for f in dataclasses.fields(self) if f.name != "history_values"}
        picked["history_values"] = self.history_values[np.repeat(rows, self.history_lengths)]
        return Impressions(**picked)

    @classmethod
    def concatenate(cls, parts: list["Impressions"]) -> "Impressions":
        if not parts:
            raise ValueError("no impressions to concatenate")
        merged = {}
        for field in dataclasses.fields(cls):
            values = [getattr(p, field.name) for p in parts]
            merged[field.name] = None if any(v is None for v in values) else np.concatenate(values)
        return cls(**merged)


def _atomic_path(path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path + ".tmp"


# ---------------------------------------------------------------------------------------- corpus

def write_corpus(path: str, corpus: Corpus) -> None:
    """Writes the corpus as Parquet (embedding as a fixed-size float32 list), atomically."""
    columns = {
        fk.ITEM_ID: pa.array(corpus.item_ids.astype(str), pa.string()),
        fk.EMBEDDING: pa.FixedSizeListArray.from_arrays(
            pa.array(corpus.embeddings.astype(np.float32).ravel()), corpus.dim),
        fk.FIRST_DAY: pa.array(corpus.first_day.astype(np.int64)),
    }
    if corpus.titles is not None:
        columns[fk.TITLE] = pa.array(corpus.titles.astype(str), pa.string())
    tmp = _atomic_path(path)
    # Row groups of 8,192 items let Beam's Parquet reader split the file across workers.
    pq.write_table(pa.table(columns), tmp, row_group_size=8192)
    os.replace(tmp, path)


def _read_parquet(path: str) -> pa.Table:
    if not os.path.exists(path):
        raise ContractError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ContractError(f"{path}: file is empty (expected a Parquet file)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ContractError(f"{path}: not a readable Parquet file ({e})") from e
    if table.num_rows == 0:
        raise ContractError(f"{path}: file is empty (no rows)")
    return table


def _string_column(table: pa.Table, name: str) -> np.ndarray:
    values = table.column(name).to_pylist()
    return np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)


def read_corpus(path: str, embedding_dim: int | None = None, rejects_path: str | None = None) -> Corpus:
    """Reads and validates a corpus Parquet file.

    Args:
      path: the Parquet file.
      embedding_dim: the expected D; by default the most common embedding length in the file.
      rejects_path: JSON-lines file for unusable rows; None raises on the first one.

    Returns:
      The valid rows.

    Raises:
      ContractError: on a file-level problem, on a bad row in strict mode, or if no row is valid.
    """
    table = _read_parquet(path)
    contracts.check_columns(table.schema, fk.CORPUS_FIELDS, path)
    n = table.num_rows
    item_ids = _string_column(table, fk.ITEM_ID)
    values, lengths, emb_null = contracts.list_column(table.column(fk.EMBEDDING))
    values = values.astype(np.float32)
    offsets = np.cumsum(lengths) - lengths
    present = lengths[~emb_null]
    dim = embedding_dim or (int(np.bincount(present).argmax()) if present.size else 0)
    right_len = ~emb_null & (lengths == dim)
    embeddings = np.zeros((n, dim), np.float32)
    if right_len.any():
        embeddings[right_len] = values[offsets[right_len, None] + np.arange(dim)]
    first_day = table.column(fk.FIRST_DAY).to_numpy(zero_copy_only=False)
    day_null = table.column(fk.FIRST_DAY).is_null().to_numpy(zero_copy_only=False)
    first_day = np.where(day_null, -1, np.nan_to_num(first_day, nan=-1)).astype(np.int64)
    titles = _string_column(table, fk.TITLE) if fk.TITLE in table.column_names else None

    missing_id = np.array([v is None or v == "" for v in item_ids])
    ok, failures = contracts.first_failure([
        (fk.ITEM_ID, missing_id, lambda r: "missing or empty item id"),
        (fk.EMBEDDING, emb_null, lambda r: "missing embedding"),
        (fk.EMBEDDING, ~right_len, lambda r: f"wrong dimension: {lengths[r]} values, expected {dim}"),
        (fk.EMBEDDING, ~np.isfinite(embeddings).all(1),
         lambda r: "non-finite value (NaN or inf) in the embedding"),
        (fk.FIRST_DAY, day_null, lambda r: "missing first_day"),
        (fk.FIRST_DAY, first_day < 0, lambda r: f"first_day {first_day[r]} is negative, expected a day >= 0"),
    ], n)
    valid_rows = np.flatnonzero(ok)
    losers = contracts.duplicate_losers(item_ids[valid_rows], first_day[valid_rows], embeddings[valid_rows])
    for local, kept in losers.items():
        row, kept_row = int(valid_rows[local]), int(valid_rows[kept])
        failures[row] = (fk.ITEM_ID, f"duplicate item id '{item_ids[row]}': kept row {kept_row} "
                                     "(earliest first_day, then smallest embedding digest)")
        ok[row] = False

    with RejectSink(rejects_path) as sink:
        for row in sorted(failures):
            field, reason = failures[row]
            record = {fk.ITEM_ID: item_ids[row],
                      fk.EMBEDDING: values[offsets[row]:offsets[row] + lengths[row]],
                      fk.FIRST_DAY: None if day_null[row] else int(first_day[row])}
            sink.reject(Rejection(path, row, field, reason), record)
    if not ok.any():
        raise ContractError(f"{path}: no valid rows out of {n} (see {rejects_path})")
    return Corpus(item_ids=item_ids[ok], embeddings=embeddings[ok], first_day=first_day[ok],
                  titles=None if titles is None else titles[ok])


# ------------------------------------------------------------------------------------------ logs

def list_array(values: np.ndarray, lengths: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """A large_list Arrow column (what tf.Example coders and TFXIO read) from flat values and lengths."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, value_type))


def scalar_list_array(values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """A large_list column of one value per row."""
    return list_array(values, np.ones(len(values), np.int64), value_type)


def encode_examples(impressions: Impressions) -> list[bytes]:
    """Serialises impressions as tf.Example protos (C++ encoder of tfx_bsl; no per-row Python)."""
    from tfx_bsl.coders import example_coder

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
    return example_coder.RecordBatchToExamples(batch)


def encode_sid_examples(item_ids: np.ndarray, sids: np.ndarray, rqvae_version: str) -> list[bytes]:
    """Serialises SID table rows as tf.Example protos (item_id, sid int64[L], rqvae_version)."""
    from tfx_bsl.coders import example_coder

    n, width = sids.shape
    binary = pa.large_binary()
    batch = pa.RecordBatch.from_arrays([
        scalar_list_array(item_ids.astype(bytes), binary),
        list_array(sids.astype(np.int64).ravel(), np.full(n, width, np.int64), pa.int64()),
        scalar_list_array(np.full(n, rqvae_version.encode()), binary),
    ], [fk.ITEM_ID, fk.SID, fk.RQVAE_VERSION])
    return example_coder.RecordBatchToExamples(batch)


def write_tfrecord(path: str, records: Iterable[bytes]) -> None:
    """Writes GZIP TFRecords atomically (a reader never sees a half-written file)."""
    from pipeline.core.tf_env import tf

    tmp = _atomic_path(path)
    with tf.io.TFRecordWriter(tmp, options="GZIP") as writer:
        for record in records:
            writer.write(record)
    os.replace(tmp, path)


def write_day(layout: DataLayout, day: int, impressions: Impressions) -> str:
    path = layout.day_file(day)
    write_tfrecord(path, encode_examples(impressions))
    return path


def read_tfrecord_batches(path: str, batch_size: int = _DECODE_BATCH) -> Iterator[list[bytes]]:
    from pipeline.core.tf_env import tf

    compression = "GZIP" if path.endswith(".gz") else ""
    dataset = tf.data.TFRecordDataset(path, compression_type=compression).batch(batch_size)
    try:
        for batch in dataset.as_numpy_iterator():
            yield list(batch)
    except tf.errors.DataLossError as e:
        raise ContractError(f"{path}: corrupt or truncated TFRecord file ({e.message})") from e


def _scalar_values(batch: pa.RecordBatch, name: str, fill) -> tuple[np.ndarray, np.ndarray]:
    """One value per row from a decoded list column; rows without exactly one value are bad."""
    values, lengths, is_null = contracts.list_column(batch.column(name))
    bad = is_null | (lengths != 1)
    offsets = np.cumsum(lengths) - lengths
    out = np.full(batch.num_rows, fill, dtype=object if isinstance(fill, str) else values.dtype)
    out[~bad] = values[offsets[~bad]]
    return out, bad


def _decode_strings(values: np.ndarray) -> np.ndarray:
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in values], dtype=object)


@dataclasses.dataclass
class CheckedLogBatch:
    """A decoded batch of log records after the row rules: which rows pass, why the others fail."""

    ok: np.ndarray  # bool [n]
    failures: dict  # row -> (field, reason)
    impressions: Impressions  # the rows that pass


def check_log_batch(batch: pa.RecordBatch, source: str, expected_day: int | None,
                    max_history: int) -> CheckedLogBatch:
    """The log contract's row rules, on one decoded batch: the one implementation every reader calls.

    `sidrec validate`, the log readers and the transform job all go through here, so a row that one
    of them rejects, every one rejects, for the same field and reason.

    Raises:
      ContractError: a file-level problem (a column missing or of the wrong type), naming `source`.
    """
    contracts.check_columns(batch.schema, fk.LOG_FIELDS, source, scalars_as_lists=True)
    n = batch.num_rows
    strings = {}
    bad_string = {}
    for key in (fk.USER_ID, fk.WATCH_ITEM_ID, fk.CANDIDATE_ITEM_ID):
        values, bad = _scalar_values(batch, key, "")
        strings[key] = _decode_strings(values)
        bad_string[key] = bad | (strings[key] == "")
    hist_values, hist_lengths, hist_null = contracts.list_column(batch.column(fk.HISTORY_ITEM_IDS))
    hist_values = _decode_strings(hist_values)
    empty_entry = np.zeros(n, bool)
    if hist_values.size:
        row_of_value = np.repeat(np.arange(n), hist_lengths)
        empty_entry[row_of_value[hist_values == ""]] = True
    click, bad_click = _scalar_values(batch, fk.CLICK, 0)
    engagement, bad_eng = _scalar_values(batch, fk.ENGAGEMENT, 0.0)
    day, bad_day = _scalar_values(batch, fk.DAY, 0)
    has_truth = fk.TRUE_CTR in batch.schema.names
    true_ctr, bad_truth = _scalar_values(batch, fk.TRUE_CTR, 0.0) if has_truth else (None, np.zeros(n, bool))

    checks = [(key, bad_string[key], lambda r: "missing or empty item/user id") for key in bad_string]
    checks += [
        (fk.HISTORY_ITEM_IDS, hist_null, lambda r: "missing (an empty list is allowed)"),
        (fk.HISTORY_ITEM_IDS, hist_lengths > max_history,
         lambda r: f"{hist_lengths[r]} items, expected at most {max_history}"),
        (fk.HISTORY_ITEM_IDS, empty_entry, lambda r: "contains an empty item id"),
        (fk.CLICK, bad_click, lambda r: "expected exactly one int value"),
        (fk.CLICK, ~np.isin(click, (0, 1)), lambda r: f"value {click[r]}, expected 0 or 1"),
        (fk.ENGAGEMENT, bad_eng, lambda r: "expected exactly one float value"),
        (fk.ENGAGEMENT, ~((engagement >= 0) & (engagement <= 1)),
         lambda r: f"value {engagement[r]}, expected a finite float in [0, 1]"),
        (fk.DAY, bad_day, lambda r: "expected exactly one int value"),
    ]
    if expected_day is not None:
        checks.append((fk.DAY, day != expected_day,
                       lambda r: f"day {day[r]} in the partition of day {expected_day}"))
    if has_truth:
        checks.append((fk.TRUE_CTR, bad_truth | ~((true_ctr >= 0) & (true_ctr <= 1)),
                       lambda r: "expected one probability in [0, 1]"))
    ok, failures = contracts.first_failure(checks, n)
    keep_values = np.repeat(ok, hist_lengths)
    impressions = Impressions(
        user_id=strings[fk.USER_ID][ok], watch_item_id=strings[fk.WATCH_ITEM_ID][ok],
        candidate_item_id=strings[fk.CANDIDATE_ITEM_ID][ok],
        history_values=hist_values[keep_values] if hist_values.size else hist_values,
        history_lengths=hist_lengths[ok], click=click[ok].astype(np.int64),
        engagement=engagement[ok].astype(np.float32), day=day[ok].astype(np.int64),
        true_ctr=None if true_ctr is None else true_ctr[ok].astype(np.float32))
    return CheckedLogBatch(ok, failures, impressions)


def decode_log_records(decoder, records: list[bytes], source: str, first_row: int) -> pa.RecordBatch:
    """Serialized tf.Examples -> a RecordBatch (tfx_bsl decoder), or an error naming the file and rows."""
    try:
        return decoder.DecodeBatch(records)
    except Exception as e:  # tfx_bsl raises plain RuntimeError on malformed protos
        raise ContractError(f"{source}: rows {first_row}..{first_row + len(records) - 1} "
                            f"are not valid tf.Example records ({e})") from e


def log_rejection(source: str, row: int, field: str, reason: str, serialized: bytes) -> tuple[Rejection, dict]:
    """A rejected log row as every reader writes it aside: where, why, and the record itself."""
    return (Rejection(source, row, field, reason),
            {"serialized_example_base64": base64.b64encode(serialized).decode("ascii")})


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
    from tfx_bsl.coders import example_coder

    sink = sink or RejectSink()
    if not os.path.exists(path):
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
    files = sorted(glob.glob(os.path.join(layout.day_dir(day), LOG_FILE_PATTERN)))
    if not files:
        raise ContractError(f"{layout.day_dir(day)}: no files matching {LOG_FILE_PATTERN}")
    return files


def read_logs(layout: DataLayout, days: Iterable[int] | None = None, max_history: int = fk.DEFAULT_MAX_HISTORY,
              rejects_path: str | None = None) -> Impressions:
    """Reads and validates the impression logs of the given days (default: every day present).

    Raises:
      ContractError: if a day has no files, on a file-level problem, or a bad row in strict mode.
    """
    present = layout.days()
    days = present if days is None else list(days)
    if not days:
        raise ContractError(f"{layout.logs}: no day partitions (expected directories day=NNNN)")
    missing = sorted(set(days) - set(present))
    if missing:
        raise ContractError(f"{layout.logs}: no partition for days {missing}; present: {present}")
    with RejectSink(rejects_path) as sink:
        parts = [read_log_file(path, day, max_history, sink) for day in days for path in day_files(layout, day)]
    return Impressions.concatenate(parts)


# ------------------------------------------------------------------------------------- SID table

@dataclasses.dataclass
class SidTable:
    """item_id -> SID (int64 [L]) from one RQ-VAE version."""

    item_ids: np.ndarray  # object (str) [N]
    sids: np.ndarray  # int64 [N, L]
    rqvae_version: str

    def lookup(self) -> dict[str, np.ndarray]:
        return dict(zip(self.item_ids, self.sids))


def read_sid_table(pattern: str, codebook_size: int | None = None) -> SidTable:
    """Reads and validates SID table Parquet shards (a file, a directory or a glob).

    Raises:
      ContractError: if no file matches, a column is missing, an id repeats, a SID has the wrong
        length or a code out of range, or the shards mix RQ-VAE versions.
    """
    files = sorted(glob.glob(os.path.join(pattern, "*.parquet") if os.path.isdir(pattern) else pattern))
    if not files:
        raise ContractError(f"{pattern}: no SID table files")
    tables = []
    for path in files:
        table = _read_parquet(path)
        contracts.check_columns(table.schema, fk.SID_FIELDS, path)
        tables.append((path, table))
    item_ids = np.concatenate([_string_column(t, fk.ITEM_ID) for _, t in tables])
    versions = sorted({v for _, t in tables for v in t.column(fk.RQVAE_VERSION).unique().to_pylist()})
    if len(versions) != 1:
        raise ContractError(f"{pattern}: SIDs from several RQ-VAE versions {versions}; expected one")
    sids, sources = [], []
    for path, table in tables:
        values, lengths, is_null = contracts.list_column(table.column(fk.SID))
        width = int(lengths.max())
        for row in np.flatnonzero(is_null | (lengths != width)):
            raise ContractError(f"{path}: row {row}: field 'sid': {lengths[row]} codes, expected {width}")
        sids.append(values.astype(np.int64).reshape(-1, width))
        sources += [(path, r) for r in range(table.num_rows)]
    if len({s.shape[1] for s in sids}) != 1:
        raise ContractError(f"{pattern}: shards disagree on the SID length: {[s.shape[1] for s in sids]}")
    sids = np.concatenate(sids)
    out_of_range = (sids < 0) | (sids >= codebook_size if codebook_size else False)
    for row in np.flatnonzero(out_of_range.any(1))[:1]:
        path, local = sources[row]
        raise ContractError(f"{path}: row {local}: field 'sid': codes {sids[row].tolist()} outside [0, "
                            f"{codebook_size or 'K'})")
    unique, counts = np.unique(item_ids, return_counts=True)
    if (counts > 1).any():
        raise ContractError(f"{pattern}: item id '{unique[counts > 1][0]}' appears {counts.max()} times; "
                            "expected one row per item")
    return SidTable(item_ids=item_ids, sids=sids, rqvae_version=versions[0])
