"""Imported first by every Beam worker process (`--beam_plugins`, set by beam_jobs.options).

Workers load the transform graph of a sid_spm output (TF Transform's TransformDataset), which holds
TensorFlow Text's SentencePiece ops, and a worker process imports nothing of the job's own before the
graph loads: the project's TensorFlow set-up (pipeline.core.tf_env, which registers them) comes first
here. file:// URLs get their Beam file system here too.
"""

from pipeline.core import tf_env  # noqa: F401  (TensorFlow with Keras 2 and the SentencePiece ops)

from beam_jobs import gfile_filesystem  # noqa: F401,I100  (registers file:// with Beam's FileSystems)
