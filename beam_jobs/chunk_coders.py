"""A coder for the jobs' chunk elements that sizes them from their arrays instead of encoding them.

Every Beam worker samples each PCollection's elements to report their mean size (the MeanByteCount
counter), and it measures a sampled element by encoding it with the PCollection's coder: the first 10
elements of every transform's output always, then fewer. For a job whose elements are chunks of
thousands of rows (a 2,048-row chunk of D=2,048 embeddings is 16 MB), that pickled most of the data
once per transform on a corpus of tens of thousands of items. This coder encodes as pickle does, but
estimates a size from the payload's array bytes, which costs nothing.

A PCollection gets it when its producer declares the element type (`.with_output_types(Chunk)`), as
the coder registry maps types to coders.
"""

import pickle

import apache_beam as beam
import numpy as np
import pyarrow as pa


def payload_bytes(value) -> int:
    """The bytes an element carries in numpy arrays and Arrow buffers (other fields count a few bytes)."""
    if isinstance(value, np.ndarray):
        return value.nbytes if value.dtype != object else 16 * value.size
    if isinstance(value, (pa.Table, pa.RecordBatch)):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(payload_bytes(v) for v in value)
    return 8


class ChunkCoder(beam.coders.Coder):
    """Pickle (protocol 5) for chunks of arrays; size estimates from the arrays' bytes."""

    def encode(self, value) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes):
        return pickle.loads(encoded)

    def is_deterministic(self) -> bool:
        return False

    def estimate_size(self, value) -> int:
        return payload_bytes(value)

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


def register(*types) -> None:
    """Chunk types whose PCollections (declared with .with_output_types) use ChunkCoder."""
    for chunk_type in types:
        beam.coders.registry.register_coder(chunk_type, ChunkCoder)
