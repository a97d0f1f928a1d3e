"""Shared fixtures: small simulated worlds and the real MovieLens files."""

import os

import pytest

from pipeline.core import tf_env  # noqa: F401  (first: TensorFlow with Keras 2, before any test imports it)

from pipeline.data import movielens

# Seconds each slow module took with three workers on 2 cores (pytest --junitxml, December 2026). The xdist
# workers take whole modules (--dist loadfile) in collection order (--no-loadscope-reorder: not by test
# count), so the slowest go first and the workers finish together; a module not listed goes after them. A
# stale figure costs balance, never a result.
SLOW_MODULES = {"test_docs_operating": 339, "test_daily": 215, "test_study": 186, "test_docs_pages": 144,
                "test_report": 132, "test_rqvae": 129, "test_cloud": 113, "test_experiment": 112,
                "test_day_loop": 110, "test_distributed_training": 90, "test_import_interactions": 76,
                "test_model_versions": 62, "test_serving": 61, "test_transform_job": 52,
                "test_materialize_sids": 50, "test_warm_start": 36, "test_representations_beyond_the_paper": 26,
                "test_cold_start": 26, "test_preprocessing": 25, "test_export": 23,
                "test_item_features_join": 21, "test_rest_api": 20}


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: -SLOW_MODULES.get(item.module.__name__.rsplit(".", 1)[-1], 0))


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


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A small simulated run with SIDs materialised (3 days), shared by the transform and ranker tests."""
    from worlds import small_run

    return small_run(str(tmp_path_factory.mktemp("small_run")))


@pytest.fixture(scope="session")
def spm_run(run_dir):
    """The sid_spm transform (V=300) of `run_dir`."""
    from worlds import run_transform

    return run_transform(run_dir, "sid_spm", vocab_size=300)


@pytest.fixture(scope="session")
def spm_ranker(spm_run, tmp_path_factory):
    """A small sid_spm ranker trained day by day on `spm_run`: {"run": its directory, "export": its export base
    (one version a day), "history": what `day_loop.train` returned}."""
    from pipeline.stages import day_loop

    root = tmp_path_factory.mktemp("spm_ranker")
    config = day_loop.TrainConfig(batch_size=256, hidden_dims=(16,), embedding_dim=8)
    history = day_loop.train(spm_run["output"], str(root / "run"), config, str(root / "export"), log=lambda *_: None)
    return {"run": str(root / "run"), "export": str(root / "export"), "history": history}
