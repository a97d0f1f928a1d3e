"""Orchestration and code shared by Beam and Keras (configs, feature keys, data contracts, CLI).

This package is the one place that pins Keras 2 for TensorFlow Recommenders: TF_USE_LEGACY_KERAS
must be set before TensorFlow is first imported, so `models`, `beam_jobs` and `serving` import
this package before anything else.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF C++ info and warnings out of progress output
