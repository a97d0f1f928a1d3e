"""Arrow record batches -> serialized tf.Examples with their features in name order (stable bytes).

tfx_bsl's C++ encoder writes an Example's feature map in hash order, which changes from batch to
batch and process to process: equal examples then have different bytes, and so do files and their
fingerprints. Each record is re-serialised deterministically (protobuf sorts map keys), at about
7 us a record.
"""

import pyarrow as pa

from pipeline.core.tf_env import tf
from tfx_bsl.coders import example_coder  # noqa: I100  (after the TF set-up)


def to_examples(batch: pa.RecordBatch) -> list[bytes]:
    """One serialized tf.Example per row, features in name order."""
    return [tf.train.Example.FromString(record).SerializeToString(deterministic=True)
            for record in example_coder.RecordBatchToExamples(batch)]
