"""The TensorFlow set-up: every module of the project gets TensorFlow from here, never directly.

TensorFlow Recommenders needs Keras 2, chosen by TF_USE_LEGACY_KERAS before TensorFlow is first
imported; importing `tf` from this module guarantees that order wherever a process starts (the CLI,
a Beam worker, the server, a test). Graphs holding SentencePiece ops (sid_spm transform graphs and
the exports that carry them) load only after `load_sentencepiece_ops()`.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF C++ info and warnings out of progress output

import tensorflow as tf  # noqa: E402

__all__ = ["tf", "load_sentencepiece_ops"]


def load_sentencepiece_ops() -> None:
    """Registers tensorflow_text's SentencePiece ops, which sid_spm graphs hold (idempotent)."""
    import tensorflow_text  # noqa: F401
