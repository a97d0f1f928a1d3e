"""The one file-system seam for run artefacts: local paths and object stores (gs://, file:// URLs) alike.

Every stage, reader and writer reads and writes run artefacts through these functions (tf.io.gfile
underneath, which knows local paths, gs:// and file:// URLs); the Beam jobs use Beam's FileSystems,
which knows the same schemes (beam_jobs.gfile_filesystem registers file://, which Beam lacks).
tests/test_file_seam.py walks the product code and names any local-only call that comes back.
"""

import errno
import fnmatch
import io
import json
import os
import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.tf_env import tf

gfile = tf.io.gfile


def is_local(path: str) -> bool:
    return "://" not in path


def join(*parts: str) -> str:
    """os.path.join for local paths, "/" for URLs (a Windows separator never reaches an object store)."""
    return os.path.join(*parts) if is_local(parts[0]) else posixpath.join(*parts)


def basename(path: str) -> str:
    return os.path.basename(path) if is_local(path) else posixpath.basename(path.rstrip("/"))


def dirname(path: str) -> str:
    return os.path.dirname(path) if is_local(path) else posixpath.dirname(path.rstrip("/"))


def exists(path: str) -> bool:
    return gfile.exists(path)


def isdir(path: str) -> bool:
    return gfile.isdir(path)


def listdir(path: str) -> list[str]:
    """The names in a directory (no trailing "/"), sorted; [] when it does not exist."""
    return sorted(name.rstrip("/") for name in gfile.listdir(path)) if gfile.isdir(path) else []


def glob(pattern: str) -> list[str]:
    """The paths matching a pattern (* and ? in the last part), sorted."""
    return sorted(gfile.glob(pattern))


def files_in(directory: str, pattern: str = "*") -> list[str]:
    """The files of one directory whose names match `pattern`, sorted (no recursion)."""
    return [join(directory, name) for name in listdir(directory)
            if fnmatch.fnmatch(name, pattern) and not gfile.isdir(join(directory, name))]


def makedirs(path: str) -> None:
    gfile.makedirs(path)


def size(path: str) -> int:
    return int(gfile.stat(path).length)


def tree_state(path: str) -> tuple:
    """(relative path, size, modification time) of every file under `path`, sorted: equal while nothing changed."""
    out = []
    for directory, _, names in gfile.walk(path):
        for name in names:
            stat = gfile.stat(join(directory, name))
            out.append((join(directory, name)[len(path.rstrip("/")) + 1:], int(stat.length), int(stat.mtime_nsec)))
    return tuple(sorted(out))


def rename(source: str, target: str) -> None:
    """Moves a file (a rename where the store has one; an existing target is an error)."""
    gfile.rename(source, target, overwrite=False)


def remove(path: str) -> None:
    """Removes a file or a directory tree; nothing when it is not there."""
    if gfile.isdir(path):
        gfile.rmtree(path)
    elif gfile.exists(path):
        gfile.remove(path)


def open_file(path: str, mode: str = "r"):
    """A file object (tf.io.gfile.GFile) for reading or writing; "w" creates the parent directory."""
    if "w" in mode or "a" in mode:
        parent = dirname(path)
        if parent:
            gfile.makedirs(parent)
    return gfile.GFile(path, mode)


def _read(path: str, mode: str):
    """The whole file; a missing one raises FileNotFoundError (as open() does), not TensorFlow's NotFoundError."""
    try:
        with gfile.GFile(path, mode) as f:
            return f.read()
    except tf.errors.NotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such file", path) from None


def read_bytes(path: str) -> bytes:
    return _read(path, "rb")


def write_bytes(path: str, data: bytes) -> None:
    with open_file(path, "wb") as f:
        f.write(data)


def read_text(path: str) -> str:
    return _read(path, "r")


def write_text(path: str, text: str) -> None:
    with open_file(path, "w") as f:
        f.write(text)


def read_json(path: str):
    return json.loads(read_text(path))


def write_json(path: str, value, indent: int | None = 2) -> None:
    write_text(path, json.dumps(value, indent=indent))


def copy(source: str, target: str) -> None:
    gfile.copy(source, target, overwrite=True)


def copy_tree(source: str, target: str) -> None:
    """Copies a directory file by file (local or object store)."""
    for directory, _, names in gfile.walk(source):
        destination = target + directory[len(source.rstrip("/")):]
        gfile.makedirs(destination)
        for name in names:
            gfile.copy(join(directory, name), join(destination, name), overwrite=True)


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file, or every *.parquet file of a directory concatenated."""
    if gfile.isdir(path):
        parts = files_in(path, "*.parquet")
        tables = [read_parquet(p, columns) for p in parts]
        return pa.concat_tables(tables) if tables else pa.table({})
    if is_local(path):
        return pq.read_table(path, columns=columns)
    return pq.read_table(pa.BufferReader(read_bytes(path)), columns=columns)


def write_parquet(table: pa.Table, path: str, **options) -> None:
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, **options)
    write_bytes(path, buffer.getvalue().to_pybytes())


def save_npz(path: str, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(path, buffer.getvalue())


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(read_bytes(path))) as arrays:
        return {key: arrays[key] for key in arrays.files}


def load_npy(path: str) -> np.ndarray:
    return np.load(io.BytesIO(read_bytes(path)))
