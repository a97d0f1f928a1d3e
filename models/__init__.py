"""Keras/TFRS models: RQ-VAE, item representations, the multitask ranker."""
