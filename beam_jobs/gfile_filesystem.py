"""A Beam FileSystem over tf.io.gfile for file:// URLs, which TensorFlow knows and Beam does not.

Beam finds a file system by the scheme of a path; defining this subclass registers it (beam_jobs
imports it), so `FileSystems` and every Beam IO (Parquet, TFRecord, text) read and write file://
URLs as the rest of the project does through pipeline.core.files. A run directory given as a
file:// URL is the local disk reached the way an object store is: every os.path, open() or glob
call on it fails, so a run there proves that no stage assumes a local path (tests/test_cloud.py),
in every process, with no network. gs:// keeps Beam's own GCS file system.
"""

import io
import posixpath

from apache_beam.io.filesystem import BeamIOError, CompressedFile, CompressionTypes, FileMetadata, FileSystem

from pipeline.core import files
from pipeline.core.tf_env import tf

gfile = tf.io.gfile


class _GFileIO(io.RawIOBase):
    """A GFile as a standard raw stream (`closed`, `readinto`, ...), which pyarrow and Beam's codecs expect."""

    def __init__(self, path: str, mode: str):
        super().__init__()
        self._file = gfile.GFile(path, mode)
        self.mode = mode  # Beam's CompressedFile reads it too

    def readable(self):
        return "r" in self.mode

    def writable(self):
        return "w" in self.mode

    def seekable(self):
        return "r" in self.mode

    def readinto(self, buffer):
        data = self._file.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def write(self, data):
        self._file.write(bytes(data))
        return len(data)

    def seek(self, offset, whence=io.SEEK_SET):
        self._file.seek(offset, whence)
        return self._file.tell()

    def tell(self):
        return self._file.tell()

    def flush(self):
        if "w" in self.mode and not self.closed:
            self._file.flush()

    def close(self):
        if not self.closed:
            self._file.close()
        super().close()


class GFileFileSystem(FileSystem):
    """file:// through tf.io.gfile."""

    @classmethod
    def scheme(cls):
        return "file"

    def join(self, basepath, *paths):
        return posixpath.join(basepath, *paths)

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        gfile.makedirs(path)

    def has_dirs(self):
        return True

    def _url_dirname(self, url_or_path):
        return self.split(url_or_path)[0]

    def _list(self, dir_or_prefix):
        root = dir_or_prefix if gfile.isdir(dir_or_prefix) else self.split(dir_or_prefix)[0]
        if not gfile.exists(root):
            return
        try:
            for directory, _, names in gfile.walk(root):
                for name in names:
                    path = self.join(directory, name)
                    if path.startswith(dir_or_prefix):
                        yield self.metadata(path)
        except Exception as e:  # noqa: BLE001 (Beam's contract: listing failures are BeamIOErrors)
            raise BeamIOError("List operation failed", {dir_or_prefix: e})

    def _open(self, path, mode, compression_type):
        compression_type = FileSystem._get_compression_type(path, compression_type)
        raw = io.BufferedReader(_GFileIO(path, mode)) if "r" in mode else io.BufferedWriter(_GFileIO(path, mode))
        return raw if compression_type == CompressionTypes.UNCOMPRESSED else CompressedFile(raw, compression_type)

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        gfile.makedirs(self.split(path)[0])
        return self._open(path, "wb", compression_type)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        return self._open(path, "rb", compression_type)

    def copy(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names):
            (files.copy_tree if gfile.isdir(source) else files.copy)(source, destination)

    def rename(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names):
            gfile.makedirs(self.split(destination)[0])
            gfile.rename(source, destination, overwrite=True)

    def exists(self, path):
        return gfile.exists(path)

    def size(self, path):
        return gfile.stat(path).length

    def last_updated(self, path):
        return gfile.stat(path).mtime_nsec / 1e9

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        stat = gfile.stat(path)
        return FileMetadata(path, stat.length, stat.mtime_nsec / 1e9)

    def delete(self, paths):
        missing = {}
        for path in paths:
            if gfile.isdir(path):
                gfile.rmtree(path)
            elif gfile.exists(path):
                gfile.remove(path)
            else:
                missing[path] = FileNotFoundError(path)
        if missing:
            raise BeamIOError("Delete operation failed", missing)

    def report_lineage(self, path, lineage):
        return None
