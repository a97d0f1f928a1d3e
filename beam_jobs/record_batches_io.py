"""Writing serialized records to TFRecord files a batch per Beam element.

`beam.io.WriteToTFRecord` takes one element per record, and on the DirectRunner each element costs
more in Beam's machinery (windowed values, timestamps, argument binding) than the transform graph
spends on the record. Here an element is a whole batch's records (a list), written one after another
by Beam's own TFRecord sink: the same files, shard names, temp-then-rename commit, and framing.
"""

import struct

import apache_beam as beam
from apache_beam.io import iobase, tfrecordio
from apache_beam.io.filesystem import CompressionTypes


def framed(records) -> bytes:
    """Records in TFRecord framing (length, its masked CRC-32C, data, its masked CRC-32C), one after another.

    Beam's own writer frames a record as four writes into the (compressing) file: a batch framed at once
    is one write, one call into zlib instead of four per record.
    """
    masked_crc = tfrecordio._TFRecordUtil._masked_crc32c  # Beam's CRC, so the bytes are the ones it writes
    parts = []
    for record in records:
        length = struct.pack("<Q", len(record))
        parts += (length, struct.pack("<I", masked_crc(length)), record, struct.pack("<I", masked_crc(record)))
    return b"".join(parts)


class _BatchedTFRecordSink(tfrecordio._TFRecordSink):  # the file handling is Beam's
    def write_record(self, file_handle, value):
        file_handle.write(framed(value))


class WriteTFRecordBatches(beam.PTransform):
    """PCollection of lists of serialized records -> TFRecord files (as WriteToTFRecord names them)."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str = "", num_shards: int = 0,
                 shard_name_template: str | None = None):
        super().__init__()
        self._sink = _BatchedTFRecordSink(file_path_prefix, None, file_name_suffix, num_shards, shard_name_template,
                                          CompressionTypes.AUTO)

    def expand(self, pcoll):
        return pcoll | iobase.Write(self._sink)
