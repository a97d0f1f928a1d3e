"""The TensorFlow set-up: every module of the project gets TensorFlow from here, never directly.

Importing `tf` from this module is the one loader every process goes through (the CLI, a Beam worker,
the server, a test), so two things hold wherever a graph is built or loaded:
  - TensorFlow Recommenders gets Keras 2: TF_USE_LEGACY_KERAS is set before TensorFlow is first imported;
  - TensorFlow Text's ops are registered: sid_spm transform graphs and the exports that carry them hold
    SentencePiece ops, and TensorFlow refuses to load such a graph ("Op type not registered
    'SentencepieceOp'") in a process that never imported tensorflow_text. It costs about 0.15 s, once.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF C++ info and warnings out of progress output

import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402,F401  (registers the SentencePiece ops graphs hold)

__all__ = ["tf"]
