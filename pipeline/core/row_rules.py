"""The row rules of each data contract, in one place: every reader, Beam job and validator calls these.

A rule returns which rows pass and, for each row that does not, the first failing field and why,
so `sidrec validate`, the readers, the materialisation job and the transform job reject the same
rows for the same reasons. The duplicate-id rule (which of several rows with one id is kept) lives
here too, for the corpus reader and the Beam job alike.
"""

import base64
import dataclasses
import functools
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core import contracts
from pipeline.core import features as fk
from pipeline.core.arrow_lists import list_column
from pipeline.core.contracts import Rejection
from pipeline.core.records import Impressions


# ---------------------------------------------------------------------------------------- corpus

@dataclasses.dataclass
class CheckedCorpusRows:
    """A corpus batch after the row rules: which rows pass, why the others fail, the parsed columns."""

    ok: np.ndarray  # bool [n]
    failures: dict  # row -> (field, reason)
    item_ids: np.ndarray  # object (str) [n]
    embeddings: np.ndarray  # float32 [n, dim]; zeros where the row's embedding is unusable
    first_day: np.ndarray  # int64 [n]; -1 where missing
    dim: int
    _values: np.ndarray
    _offsets: np.ndarray
    _lengths: np.ndarray
    _day_null: np.ndarray

    def record(self, row: int) -> dict:
        """Row `row` as it was read (for the dead letter)."""
        start = self._offsets[row]
        return {fk.ITEM_ID: self.item_ids[row], fk.EMBEDDING: self._values[start:start + self._lengths[row]],
                fk.FIRST_DAY: None if self._day_null[row] else int(self.first_day[row])}


def string_column(table: pa.Table, name: str) -> np.ndarray:
    """A string column as an object array of str (bytes decoded; None kept)."""
    values = table.column(name).to_pylist()
    return np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)


def _int_column(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values with -1 for nulls, is null) of an int column (or a column with no value at all)."""
    column = table.column(name)
    is_null = column.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_null(column.type):
        return np.full(len(is_null), -1, np.int64), is_null
    values = np.nan_to_num(column.to_numpy(zero_copy_only=False).astype(np.float64), nan=-1)
    return np.where(is_null, -1, values).astype(np.int64), is_null


def check_corpus_rows(table: pa.Table, source: str, embedding_dim: int | None = None) -> CheckedCorpusRows:
    """The corpus contract's row rules on one batch (a whole file or a Beam chunk).

    Args:
      table: rows with the corpus columns.
      source: the file, for messages.
      embedding_dim: the expected D; by default the most common embedding length in the batch.

    Raises:
      ContractError: a required column is missing or has the wrong type.
    """
    contracts.check_columns(table.schema, fk.CORPUS_FIELDS, source)
    n = table.num_rows
    item_ids = string_column(table, fk.ITEM_ID)
    values, lengths, emb_null = list_column(table.column(fk.EMBEDDING))
    values = values.astype(np.float32, copy=False)
    offsets = np.cumsum(lengths) - lengths
    present = lengths[~emb_null]
    dim = embedding_dim or (int(np.bincount(present).argmax()) if present.size else 0)
    right_len = ~emb_null & (lengths == dim)
    if right_len.all():  # the usual case: D values per row, back to back (a view, no gather)
        embeddings = values.reshape(n, dim)
    else:
        embeddings = np.zeros((n, dim), np.float32)
        embeddings[right_len] = values[offsets[right_len, None] + np.arange(dim)]
    first_day, day_null = _int_column(table, fk.FIRST_DAY)
    missing_id = np.array([not isinstance(v, str) or v == "" for v in item_ids], dtype=bool)
    ok, failures = contracts.first_failure([
        (fk.ITEM_ID, missing_id, lambda r: "missing or empty item id"),
        (fk.EMBEDDING, emb_null, lambda r: "missing embedding"),
        (fk.EMBEDDING, ~right_len, lambda r: f"wrong dimension: {lengths[r]} values, expected {dim}"),
        (fk.EMBEDDING, ~np.isfinite(embeddings).all(1),
         lambda r: "non-finite value (NaN or inf) in the embedding"),
        (fk.FIRST_DAY, day_null, lambda r: "missing first_day"),
        (fk.FIRST_DAY, first_day < 0, lambda r: f"first_day {first_day[r]} is negative, expected a day >= 0"),
    ], n)
    return CheckedCorpusRows(ok, failures, item_ids, embeddings, first_day, dim, values, offsets, lengths, day_null)


def duplicate_key(first_day: int, embedding: np.ndarray) -> tuple[int, str]:
    """What decides between rows of one item id: first_day, then the SHA-1 of the float32 embedding bytes."""
    return int(first_day), hashlib.sha1(np.ascontiguousarray(embedding, dtype=np.float32).tobytes()).hexdigest()


def resolve_duplicates(item_id: str, keys: list[tuple[int, str]]) -> tuple[int, dict[int, str]]:
    """The duplicate-id rule: of the rows sharing `item_id`, the smallest `duplicate_key` is kept.

    The rule does not depend on row order; rows identical in both keys are interchangeable.

    Returns:
      (index of the kept row, {index of each other row: the reason it was rejected}).
    """
    kept = min(range(len(keys)), key=lambda i: (keys[i], i))
    kept_day, kept_digest = keys[kept]
    reasons = {}
    for i, key in enumerate(keys):
        if i == kept:
            continue
        reasons[i] = (f"duplicate item id '{item_id}': an identical row was kept" if key == keys[kept] else
                      f"duplicate item id '{item_id}': kept the row with first_day {kept_day} and embedding "
                      f"digest {kept_digest[:12]} (earliest first_day, then smallest embedding digest)")
    return kept, reasons


def duplicate_rejections(item_ids: np.ndarray, first_day: np.ndarray, embeddings: np.ndarray) -> dict[int, str]:
    """The duplicate-id rule over whole arrays: {row of every row not kept: reason}."""
    uniq, inverse, counts = np.unique(item_ids, return_inverse=True, return_counts=True)
    rejected = {}
    for group in np.flatnonzero(counts > 1):
        rows = np.flatnonzero(inverse == group)
        _, reasons = resolve_duplicates(uniq[group], [duplicate_key(first_day[r], embeddings[r]) for r in rows])
        rejected.update({int(rows[i]): reason for i, reason in reasons.items()})
    return rejected


# ------------------------------------------------------------------------------------------ logs

def _scalar_values(batch: pa.RecordBatch, name: str, fill) -> tuple[np.ndarray, np.ndarray]:
    """One value per row from a decoded list column; rows without exactly one value are bad."""
    values, lengths, is_null = list_column(batch.column(name))
    bad = is_null | (lengths != 1)
    offsets = np.cumsum(lengths) - lengths
    out = np.full(batch.num_rows, fill, dtype=values.dtype)
    out[~bad] = values[offsets[~bad]]
    return out, bad


def _flat_array(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _utf8(values: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Binary values as Arrow strings, and which are not valid UTF-8 (those become empty)."""
    try:
        return values.cast(pa.large_string()), np.zeros(len(values), bool)
    except pa.ArrowInvalid:  # rare: find the bad values one by one
        raw = values.to_pylist()
        decoded = [_decode_or_none(v) for v in raw]
        invalid = np.array([d is None and v is not None for d, v in zip(decoded, raw)], bool)
        return pa.array(decoded, pa.large_string()).fill_null(""), invalid


def _decode_or_none(value: bytes | None) -> str | None:
    try:
        return None if value is None else value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _scalar_strings(batch: pa.RecordBatch, name: str) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """One string per row (Arrow; "" where a row has not exactly one), rows without exactly one value or an
    empty one, and rows whose value is not UTF-8."""
    array = _flat_array(batch.column(name))
    lengths = array.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    bad = array.is_null().to_numpy(zero_copy_only=False) | (lengths != 1)
    starts = np.cumsum(lengths) - lengths
    values = array.flatten().take(pa.array(starts, mask=bad)).cast(pa.large_binary()).fill_null(b"")
    strings, invalid = _utf8(values)
    empty = pc.binary_length(values).to_numpy(zero_copy_only=False) == 0
    return strings, bad | empty, invalid & ~bad


@dataclasses.dataclass
class CheckedLogBatch:
    """A decoded batch of log records after the row rules: which rows pass, why the others fail.

    `impressions` (the passing rows as Python objects) is built on first use: the transform job never
    needs it, and decoding every id to a Python string was most of its row checks' time.
    """

    ok: np.ndarray  # bool [n]
    failures: dict  # row -> (field, reason)
    _build: object = dataclasses.field(repr=False)

    @functools.cached_property
    def impressions(self) -> Impressions:
        return self._build()


def check_log_batch(batch: pa.RecordBatch, source: str, expected_day: int | None,
                    max_history: int) -> CheckedLogBatch:
    """The log contract's row rules, on one decoded batch: the one implementation every reader calls.

    `sidrec validate`, the log readers and the transform job all go through here, so a row that one
    of them rejects, every one rejects, for the same field and reason. Ids are checked in Arrow
    (present, not empty, UTF-8) without becoming Python strings.

    Raises:
      ContractError: a file-level problem (a column missing or of the wrong type), naming `source`.
    """
    contracts.check_columns(batch.schema, fk.LOG_FIELDS, source, scalars_as_lists=True)
    n = batch.num_rows
    strings, bad_string, not_utf8 = {}, {}, {}
    for key in (fk.USER_ID, fk.WATCH_ITEM_ID, fk.CANDIDATE_ITEM_ID):
        strings[key], bad_string[key], not_utf8[key] = _scalar_strings(batch, key)
    history = _flat_array(batch.column(fk.HISTORY_ITEM_IDS))
    hist_lengths = history.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    hist_null = history.is_null().to_numpy(zero_copy_only=False)
    hist_flat = history.flatten().cast(pa.large_binary())
    hist_strings, hist_invalid = _utf8(hist_flat)
    row_of_value = np.repeat(np.arange(n), hist_lengths)
    empty_entry, invalid_entry = np.zeros(n, bool), np.zeros(n, bool)
    empty_entry[row_of_value[pc.binary_length(hist_flat).to_numpy(zero_copy_only=False) == 0]] = True
    invalid_entry[row_of_value[hist_invalid]] = True
    click, bad_click = _scalar_values(batch, fk.CLICK, 0)
    engagement, bad_eng = _scalar_values(batch, fk.ENGAGEMENT, 0.0)
    day, bad_day = _scalar_values(batch, fk.DAY, 0)
    has_truth = fk.TRUE_CTR in batch.schema.names
    true_ctr, bad_truth = _scalar_values(batch, fk.TRUE_CTR, 0.0) if has_truth else (None, np.zeros(n, bool))

    checks = [(key, bad_string[key], lambda r: "missing or empty item/user id") for key in bad_string]
    checks += [(key, not_utf8[key], lambda r: "not valid UTF-8") for key in not_utf8]
    checks += [
        (fk.HISTORY_ITEM_IDS, hist_null, lambda r: "missing (an empty list is allowed)"),
        (fk.HISTORY_ITEM_IDS, hist_lengths > max_history,
         lambda r: f"{hist_lengths[r]} items, expected at most {max_history}"),
        (fk.HISTORY_ITEM_IDS, empty_entry, lambda r: "contains an empty item id"),
        (fk.HISTORY_ITEM_IDS, invalid_entry, lambda r: "contains an item id that is not valid UTF-8"),
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

    def build() -> Impressions:
        keep = pa.array(ok)
        keep_values = pa.array(np.repeat(ok, hist_lengths))

        def kept(values: pa.Array, mask) -> np.ndarray:
            return np.asarray(values.filter(mask).to_numpy(zero_copy_only=False), dtype=object)

        return Impressions(
            user_id=kept(strings[fk.USER_ID], keep), watch_item_id=kept(strings[fk.WATCH_ITEM_ID], keep),
            candidate_item_id=kept(strings[fk.CANDIDATE_ITEM_ID], keep),
            history_values=kept(hist_strings, keep_values), history_lengths=hist_lengths[ok],
            click=click[ok].astype(np.int64), engagement=engagement[ok].astype(np.float32),
            day=day[ok].astype(np.int64), true_ctr=None if true_ctr is None else true_ctr[ok].astype(np.float32))

    return CheckedLogBatch(ok, failures, build)


def log_rejection(source: str, row: int, field: str, reason: str, serialized: bytes) -> tuple[Rejection, dict]:
    """A rejected log row as every reader writes it aside: where, why, and the record itself."""
    return (Rejection(source, row, field, reason),
            {"serialized_example_base64": base64.b64encode(serialized).decode("ascii")})


