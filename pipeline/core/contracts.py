"""Data contracts checked at the edge: schema, dtypes, dimensions, finiteness, uniqueness, day ranges.

A file-level problem (missing column, wrong column type, empty file) raises `ContractError`. A row
that cannot be used is handed to a `RejectSink`: in strict mode (no place to write rejects) that
raises `ContractError` at once; otherwise the row is written aside as a JSON line with the reason
and counted, never dropped silently. Every message names the file, the row and the field.
"""

import collections
import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from pipeline.core import features as fk

_ARROW_KIND = {
    fk.Kind.STRING: lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)
    or pa.types.is_binary(t) or pa.types.is_large_binary(t),
    fk.Kind.INT: pa.types.is_integer,
    fk.Kind.FLOAT: pa.types.is_floating,
}


class ContractError(ValueError):
    """Input that breaks a data contract; the message says where and what was expected."""


@dataclasses.dataclass(frozen=True)
class Rejection:
    source: str
    row: int
    field: str
    reason: str

    def message(self) -> str:
        return f"{self.source}: row {self.row}: field '{self.field}': {self.reason}"


class RejectSink:
    """Rows that cannot be used: raised at once (strict) or written aside with their reason.

    Args:
      path: JSON-lines file the rejected rows go to; None means strict.
    """

    def __init__(self, path: str | None = None):
        self.path = path
        self.counts: collections.Counter = collections.Counter()
        self._file = None

    @property
    def strict(self) -> bool:
        return self.path is None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reject(self, rejection: Rejection, record: dict[str, Any]) -> None:
        if self.strict:
            raise ContractError(rejection.message())
        if self._file is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")
        self.counts[f"{rejection.field}: {rejection.reason.split(':')[0]}"] += 1
        self._file.write(rejection_json(rejection, record) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.total:
            logging.warning("%d rows rejected (%s), written to %s", self.total,
                            dict(self.counts), self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def rejection_json(rejection: Rejection, record: dict[str, Any]) -> str:
    """One dead-letter line: source, row, field, reason and the record (what every job writes aside)."""
    return json.dumps(dict(dataclasses.asdict(rejection), record=record), default=_jsonable)


def _jsonable(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)


def _list_value_type(arrow_type):
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return arrow_type.value_type
    return None


def check_columns(schema: pa.Schema, fields: dict[str, fk.Field], source: str,
                  scalars_as_lists: bool = False) -> None:
    """Raises ContractError for a missing required column or a column of the wrong type.

    Args:
      schema: the Arrow schema read from the file.
      fields: the contract (features.CORPUS_FIELDS, LOG_FIELDS or SID_FIELDS).
      source: the file name, for messages.
      scalars_as_lists: tf.Example decodes every feature as a list; scalars are then lists of one.
    """
    present = set(schema.names)
    for field in fields.values():
        if field.name not in present:
            if field.required:
                raise ContractError(
                    f"{source}: missing column '{field.name}' (expected {field.kind.value}); "
                    f"columns present: {sorted(present)}")
            continue
        arrow_type = schema.field(field.name).type
        is_list_kind = field.kind in (fk.Kind.STRING_LIST, fk.Kind.INT_LIST, fk.Kind.FLOAT_LIST)
        value_type = _list_value_type(arrow_type) if (is_list_kind or scalars_as_lists) else arrow_type
        scalar_kind = {fk.Kind.STRING_LIST: fk.Kind.STRING, fk.Kind.INT_LIST: fk.Kind.INT,
                       fk.Kind.FLOAT_LIST: fk.Kind.FLOAT}.get(field.kind, field.kind)
        if is_list_kind and value_type is not None and pa.types.is_null(value_type):
            continue  # every list in this batch is empty: no values to type
        if value_type is None or not _ARROW_KIND[scalar_kind](value_type):
            raise ContractError(f"{source}: column '{field.name}' has type {arrow_type}, "
                                f"expected {field.kind.value}")


def list_column(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Splits an Arrow list column into (flat values, row lengths, row is null)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(array, pa.ChunkedArray):
        array = pa.concat_arrays(array.chunks) if array.num_chunks else pa.array([], array.type)
    is_null = array.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_fixed_size_list(array.type):
        lengths = np.where(is_null, 0, array.type.list_size)
        values = array.flatten()  # skips null rows
    else:
        lengths = array.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        values = array.flatten()
    return values.to_numpy(zero_copy_only=False), lengths.astype(np.int64), is_null


def first_failure(checks: list[tuple[str, np.ndarray, Callable[[int], str]]], num_rows: int):
    """Combines vectorised row checks into the first failing (field, reason) per row.

    Args:
      checks: (field, bad-row mask, row -> reason) in the order they should be reported.

    Returns:
      ok mask, and a dict row -> (field, reason) for every failing row.
    """
    ok = np.ones(num_rows, dtype=bool)
    failures = {}
    for field, bad, reason in checks:
        for row in np.flatnonzero(bad & ok):
            failures[int(row)] = (field, reason(int(row)))
        ok &= ~bad
    return ok, failures


def embedding_digest(embedding: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(embedding, dtype=np.float32).tobytes()).hexdigest()


def duplicate_losers(item_ids: np.ndarray, first_day: np.ndarray, embeddings: np.ndarray) -> dict[int, int]:
    """Resolves duplicated item ids by a rule that does not depend on row order.

    The kept row is the one with the earliest first_day, then the smallest SHA-1 digest of its
    float32 embedding bytes (rows identical in both are interchangeable: any one is kept).

    Returns:
      row of every losing duplicate -> row that was kept.
    """
    uniq, inverse, counts = np.unique(item_ids, return_inverse=True, return_counts=True)
    losers = {}
    for group in np.flatnonzero(counts > 1):
        rows = np.flatnonzero(inverse == group)
        keys = [(int(first_day[r]), embedding_digest(embeddings[r]), int(r)) for r in rows]
        kept = min(keys)[2]
        losers.update({int(r): kept for r in rows if r != kept})
    return losers
