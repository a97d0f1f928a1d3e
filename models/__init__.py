"""Keras/TFRS models: RQ-VAE, item representations, the multitask ranker."""

import pipeline  # noqa: F401  (pins Keras 2 before TensorFlow is imported)
