"""The SID table: item_id -> SID (int64[L]) and the RQ-VAE version, as sharded Parquet and tf.Example."""


import numpy as np
import pyarrow as pa

from pipeline.core import features as fk
from pipeline.core import files
from pipeline.core.arrow_lists import list_array, list_column, scalar_list_array
from pipeline.core.contracts import ContractError, check_columns
from pipeline.core.examples import to_examples
from pipeline.core.records import SidTable
from pipeline.core.row_rules import string_column
from pipeline.data.corpus_io import read_parquet

SID_SCHEMA = pa.schema([(fk.ITEM_ID, pa.string()), (fk.SID, pa.list_(pa.int64())), (fk.RQVAE_VERSION, pa.string())])


def sid_parquet_table(item_ids: np.ndarray, sids: np.ndarray, rqvae_version: str) -> pa.Table:
    """SID table rows as an Arrow table of SID_SCHEMA (what the materialisation job writes)."""
    return pa.table({fk.ITEM_ID: pa.array(item_ids.astype(str), pa.string()),
                     fk.SID: pa.array(list(sids), pa.list_(pa.int64())),
                     fk.RQVAE_VERSION: pa.array([rqvae_version] * len(item_ids), pa.string())}, schema=SID_SCHEMA)


def encode_sid_examples(item_ids: np.ndarray, sids: np.ndarray, rqvae_version: str) -> list[bytes]:
    """Serialises SID table rows as tf.Example protos (item_id, sid int64[L], rqvae_version)."""
    n, width = sids.shape
    binary = pa.large_binary()
    batch = pa.RecordBatch.from_arrays([
        scalar_list_array(item_ids.astype(bytes), binary),
        list_array(sids.astype(np.int64).ravel(), np.full(n, width, np.int64), pa.int64()),
        scalar_list_array(np.full(n, rqvae_version.encode()), binary),
    ], [fk.ITEM_ID, fk.SID, fk.RQVAE_VERSION])
    return to_examples(batch)


def read_sid_table(pattern: str, codebook_size: int | None = None) -> SidTable:
    """Reads and validates SID table Parquet shards (a file, a directory or a glob).

    Raises:
      ContractError: if no file matches, a column is missing, an id repeats, a SID has the wrong
        length or a code out of range, or the shards mix RQ-VAE versions.
    """
    shards = files.files_in(pattern, "*.parquet") if files.isdir(pattern) else files.glob(pattern)
    if not shards:
        raise ContractError(f"{pattern}: no SID table files; make them with `sidrec materialize`")
    tables = []
    for path in shards:
        table = read_parquet(path)
        check_columns(table.schema, fk.SID_FIELDS, path)
        tables.append((path, table))
    item_ids = np.concatenate([string_column(t, fk.ITEM_ID) for _, t in tables])
    versions = sorted({v for _, t in tables for v in t.column(fk.RQVAE_VERSION).unique().to_pylist()})
    if len(versions) != 1:
        raise ContractError(f"{pattern}: SIDs from several RQ-VAE versions {versions}; expected one")
    sids, sources = [], []
    for path, table in tables:
        values, lengths, is_null = list_column(table.column(fk.SID))
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
