"""The corpus file: Parquet, one row per item (item_id, embedding float32[D], first_day, optional title).

The reader checks every row with the corpus contract's rules (`pipeline.core.row_rules`, the same
code the materialisation job runs): pass `rejects_path` to write unusable rows aside (counted, with
the reason); without it the first bad row raises.
"""


import numpy as np
import pyarrow as pa

from pipeline.core import features as fk
from pipeline.core import files, row_rules
from pipeline.core.contracts import ContractError, Rejection, RejectSink
from pipeline.core.layout import MAKES_DATA
from pipeline.core.publish import published
from pipeline.core.records import Corpus


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
    with published(path) as staging:
        # Row groups of 8,192 items let Beam's Parquet reader split the file across workers.
        files.write_parquet(pa.table(columns), staging, row_group_size=8192)


def read_parquet(path: str) -> pa.Table:
    if not files.exists(path):
        raise ContractError(f"{path}: no such file")
    if files.size(path) == 0:
        raise ContractError(f"{path}: file is empty (expected a Parquet file)")
    try:
        table = files.read_parquet(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ContractError(f"{path}: not a readable Parquet file ({e})") from e
    if table.num_rows == 0:
        raise ContractError(f"{path}: file is empty (no rows)")
    return table


def read_corpus(path: str, embedding_dim: int | None = None, rejects_path: str | None = None) -> Corpus:
    """Reads and validates a corpus Parquet file.

    Args:
      path: the Parquet file.
      embedding_dim: the expected D; by default the most common embedding length in the file.
      rejects_path: JSON-lines file for unusable rows; None raises on the first one.

    Returns:
      The valid rows (of rows sharing an id, the one the duplicate-id rule keeps).

    Raises:
      ContractError: on a file-level problem, on a bad row in strict mode, or if no row is valid.
    """
    if not files.exists(path):
        raise ContractError(f"{path}: no such file; make it with {MAKES_DATA}")
    table = read_parquet(path)
    checked = row_rules.check_corpus_rows(table, path, embedding_dim)
    ok, failures = checked.ok, dict(checked.failures)
    valid_rows = np.flatnonzero(ok)
    duplicates = row_rules.duplicate_rejections(checked.item_ids[valid_rows], checked.first_day[valid_rows],
                                                checked.embeddings[valid_rows])
    for local, reason in duplicates.items():
        failures[int(valid_rows[local])] = (fk.ITEM_ID, reason)
        ok[valid_rows[local]] = False
    with RejectSink(rejects_path) as sink:
        for row in sorted(failures):
            field, reason = failures[row]
            sink.reject(Rejection(path, row, field, reason), checked.record(row))
    if not ok.any():
        raise ContractError(f"{path}: no valid rows out of {table.num_rows} (see {rejects_path})")
    titles = row_rules.string_column(table, fk.TITLE) if fk.TITLE in table.column_names else None
    return Corpus(item_ids=checked.item_ids[ok], embeddings=checked.embeddings[ok], first_day=checked.first_day[ok],
                  titles=None if titles is None else titles[ok])
