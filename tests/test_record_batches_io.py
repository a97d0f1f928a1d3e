"""Batched TFRecord writing: the bytes Beam's own TFRecord sink writes, framed a batch at a time."""

import glob
import gzip
import struct

import apache_beam as beam
import tensorflow as tf

from beam_jobs.record_batches_io import WriteTFRecordBatches, framed


def _read(pattern: str) -> list[bytes]:
    return [r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(pattern)), compression_type="GZIP")]


def test_batches_write_the_files_beams_tfrecord_sink_writes(tmp_path):
    batches = [[f"record {b}-{i}".encode() * (i + 1) for i in range(b * 7)] for b in range(5)]  # an empty one too
    records = [r for batch in batches for r in batch]
    with beam.Pipeline() as p:
        _ = (p | "Batches" >> beam.Create([batches]) | beam.FlatMap(lambda bs: bs)
             | WriteTFRecordBatches(str(tmp_path / "batched"), file_name_suffix=".tfrecord.gz", num_shards=1))
        _ = (p | "Records" >> beam.Create([records]) | beam.FlatMap(lambda rs: rs)
             | beam.io.WriteToTFRecord(str(tmp_path / "beam"), file_name_suffix=".tfrecord.gz", num_shards=1))
    (batched,), (beams,) = glob.glob(str(tmp_path / "batched*")), glob.glob(str(tmp_path / "beam*"))
    assert sorted(_read(batched)) == sorted(records)
    # Same framing and CRCs as Beam's sink, record for record (the order of records is Beam's to choose).
    assert sorted(_frames(batched)) == sorted(_frames(beams))


def _frames(path: str) -> list[bytes]:
    """Each record's whole frame (header, data, CRCs) as the file holds it."""
    with gzip.open(path) as f:
        content = f.read()
    frames, position = [], 0
    while position < len(content):
        (length,) = struct.unpack_from("<Q", content, position)
        frames.append(content[position:position + 16 + length])
        position += 16 + length
    return frames


def test_framed_records_read_back_with_tensorflow(tmp_path):
    records = [b"", b"a", b"\x00" * 1000, "é".encode()]
    path = tmp_path / "framed.tfrecord"
    path.write_bytes(framed(records))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records
