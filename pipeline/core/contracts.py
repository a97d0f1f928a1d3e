"""Data contracts checked at the edge: schema, dtypes, dimensions, finiteness, uniqueness, day ranges.

A file-level problem (missing column, wrong column type, empty file) raises `ContractError`. A row
that cannot be used is handed to a `RejectSink`: in strict mode (no place to write rejects) that
raises `ContractError` at once; otherwise the row is written aside as a JSON line with the reason
and counted, never dropped silently. Every message names the file, the row and the field.
"""

import collections
import dataclasses
import json
import logging
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


class MissingOutputError(FileNotFoundError):
    """A stage's input that an earlier stage makes is not there; the message names the command that makes it."""

    def __init__(self, what: str, path: str, make_with: str):
        command = make_with if "`" in make_with else f"`{make_with}`"
        super().__init__(f"{path}: no {what}; make it with {command}")
        self.path = path


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
            from pipeline.core import files

            self._file = files.open_file(self.path, "w")
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
    return to_json_line(dict(dataclasses.asdict(rejection), record=record))


def to_json_line(value) -> str:
    """JSON of a dead-letter entry: bytes decoded, numpy arrays and scalars as lists and numbers."""
    return json.dumps(value, default=_jsonable)


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
        if pa.types.is_null(arrow_type):
            continue  # no value in any row: the row rules reject each row, naming it
        is_list_kind = field.kind in (fk.Kind.STRING_LIST, fk.Kind.INT_LIST, fk.Kind.FLOAT_LIST)
        value_type = _list_value_type(arrow_type) if (is_list_kind or scalars_as_lists) else arrow_type
        scalar_kind = {fk.Kind.STRING_LIST: fk.Kind.STRING, fk.Kind.INT_LIST: fk.Kind.INT,
                       fk.Kind.FLOAT_LIST: fk.Kind.FLOAT}.get(field.kind, field.kind)
        if is_list_kind and value_type is not None and pa.types.is_null(value_type):
            continue  # every list in this batch is empty: no values to type
        if value_type is None or not _ARROW_KIND[scalar_kind](value_type):
            raise ContractError(f"{source}: column '{field.name}' has type {arrow_type}, "
                                f"expected {field.kind.value}")


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
