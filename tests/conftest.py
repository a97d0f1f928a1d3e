"""Shared fixtures: small simulated worlds and the real MovieLens files."""

import os

import pytest

from pipeline import movielens


@pytest.fixture(scope="session")
def movielens_dir() -> str:
    """The MovieLens files; skipped where they are absent, but a failure under CI."""
    path = movielens.default_dir()
    if os.path.exists(os.path.join(path, "ratings.csv")):
        return path
    message = (f"MovieLens data not found at {path}: set ${movielens.ENV_VAR} to a copy of "
               "ml-latest-small with item_embeddings.npy and item_ids.txt")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)
