"""Imported first by every Beam worker process (`--beam_plugins`, set by beam_jobs.options).

Workers load the transform graph of a sid_spm output (TF Transform's TransformDataset), which holds
TensorFlow Text's SentencePiece ops: they must be registered in the worker's process before the
graph loads, and a worker process imports nothing of the job's own before it does. file:// URLs get
their Beam file system here too.
"""

from pipeline.core.tf_env import load_sentencepiece_ops

from beam_jobs import gfile_filesystem  # noqa: F401  (registers file:// with Beam's FileSystems)

load_sentencepiece_ops()
