"""Arrow list columns to and from numpy: what tf.Example coders, TFXIO and Parquet exchange."""

import numpy as np
import pyarrow as pa


def list_column(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Splits an Arrow list column into (flat values, row lengths, row is null)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(array, pa.ChunkedArray):
        array = pa.concat_arrays(array.chunks) if array.num_chunks else pa.array([], array.type)
    is_null = array.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_null(array.type):  # every row missing (a column built from all-None rows)
        return np.zeros(0, np.float32), np.zeros(len(array), np.int64), is_null
    if pa.types.is_fixed_size_list(array.type):
        lengths = np.where(is_null, 0, array.type.list_size)
        values = array.flatten()  # skips null rows
    else:
        lengths = array.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        values = array.flatten()
    return values.to_numpy(zero_copy_only=False), lengths.astype(np.int64), is_null


def list_array(values: np.ndarray, lengths: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """A large_list Arrow column (what tf.Example coders and TFXIO read) from flat values and lengths."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, value_type))


def scalar_list_array(values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """A large_list column of one value per row."""
    return list_array(values, np.ones(len(values), np.int64), value_type)
