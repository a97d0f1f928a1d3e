"""RQ-VAE: quantizer by hand, dead-code reset, save/load, determinism, export, SID quality bars."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from models import rqvae_savedmodel
from models.rqvae import RQVAE, RQVAEConfig, ResidualQuantizer
from pipeline import cli, rqvae_job, sid_quality
from pipeline.layout import RunLayout
from pipeline.simulate_job import to_corpus
from pipeline.simulator import SimulatorConfig, simulate

TINY = RQVAEConfig(encoder_dims=(32, 8), num_levels=3, codebook_size=16, batch_size=128, max_epochs=8,
                   patience=3, kmeans_iterations=5, reset_interval=5)


@pytest.fixture(scope="module")
def small_corpus():
    data = simulate(SimulatorConfig(num_items=2_000, num_users=50, num_days=1, impressions_per_day=100,
                                    embedding_dim=32))
    return to_corpus(data)


def _quantizer(codebooks):
    layer = ResidualQuantizer(num_levels=len(codebooks), codebook_size=len(codebooks[0]))
    layer.build((None, len(codebooks[0][0])))
    layer.codebooks.assign(np.array(codebooks, np.float32))
    return layer


def test_residual_quantizer_by_hand():
    layer = _quantizer([[[0, 0], [4, 0], [0, 4]],          # level 1
                        [[1, 0], [0, 1], [-1, -1]]])       # level 2
    codes, chosen, residuals = layer(tf.constant([[4.2, 0.9], [-0.8, -1.2]]))
    # (4.2, 0.9): nearest (4, 0), residual (0.2, 0.9), nearest (0, 1).
    # (-0.8, -1.2): nearest (0, 0), residual itself, nearest (-1, -1).
    np.testing.assert_array_equal(codes.numpy(), [[1, 1], [0, 2]])
    np.testing.assert_allclose(residuals.numpy()[1], [[0.2, 0.9], [-0.8, -1.2]], atol=1e-6)
    np.testing.assert_allclose(chosen.numpy().sum(0), [[4, 1], [-1, -1]])


def test_dead_codes_are_reset_to_batch_residuals():
    layer = _quantizer([[[0, 0], [9, 9], [5, 5]]])
    layer.record_usage(tf.constant([[0], [0], [2]]))  # code 1 unused
    residuals = tf.constant([[[1.5, 2.5], [1.5, 2.5]]])
    assert int(layer.reset_dead_codes(residuals, seed=3)) == 1
    np.testing.assert_allclose(layer.codebooks.numpy()[0], [[0, 0], [1.5, 2.5], [5, 5]])
    assert layer.usage.numpy().sum() == 0


def test_layer_and_model_configs_round_trip(tmp_path):
    layer = ResidualQuantizer.from_config(ResidualQuantizer(3, 7).get_config())
    assert (layer.num_levels, layer.codebook_size) == (3, 7)
    model = RQVAE.from_config_dataclass(32, TINY)
    x = np.random.default_rng(0).standard_normal((10, 32)).astype(np.float32)
    path = str(tmp_path / "rqvae.keras")
    model.save(path)
    restored = tf.keras.models.load_model(path)
    np.testing.assert_array_equal(restored(x)["sid"].numpy(), model(x)["sid"].numpy())
    assert restored.get_config() == model.get_config()


def test_same_seed_same_model_and_sids(small_corpus):
    log = lambda *_: None
    a, history = rqvae_job.train(small_corpus.embeddings, TINY, log)
    b, _ = rqvae_job.train(small_corpus.embeddings, TINY, log)
    c, _ = rqvae_job.train(small_corpus.embeddings, dataclasses.replace(TINY, seed=1), log)
    assert rqvae_savedmodel.weights_fingerprint(a) == rqvae_savedmodel.weights_fingerprint(b)
    np.testing.assert_array_equal(rqvae_job.encode(a, small_corpus.embeddings),
                                  rqvae_job.encode(b, small_corpus.embeddings))
    assert rqvae_savedmodel.weights_fingerprint(a) != rqvae_savedmodel.weights_fingerprint(c)
    assert history and {"epoch", "recon_loss", "utilisation", "unique_sid_ratio"} <= set(history[0])
    assert history[-1]["recon_loss"] < history[0]["recon_loss"]


def test_export_reload_gives_exactly_the_in_memory_codes(small_corpus, tmp_path):
    model, _ = rqvae_job.train(small_corpus.embeddings, TINY, lambda *_: None)
    path = rqvae_savedmodel.export(model, str(tmp_path / "export"))
    assert path.endswith(os.path.join("export", "1"))
    loaded = rqvae_savedmodel.LoadedRQVAE(path)
    out = loaded(small_corpus.embeddings, batch_size=300)
    np.testing.assert_array_equal(out["sid"], rqvae_job.encode(model, small_corpus.embeddings))
    assert out["sid"].dtype == np.int64 and out["sid"].shape == (small_corpus.size, 3)
    expected_error = ((small_corpus.embeddings - rqvae_job.reconstruct(model, small_corpus.embeddings)) ** 2).mean(1)
    np.testing.assert_allclose(out["reconstruction_error"], expected_error, rtol=1e-4, atol=1e-7)
    assert loaded.version.startswith("1-") and loaded.input_dim == 32
    # The signature is the documented one, with stable names.
    sig = tf.saved_model.load(path).signatures["serving_default"]
    assert list(sig.structured_input_signature[1]) == ["embedding"]
    assert set(sig.structured_outputs) == {"sid", "reconstruction_error"}
    # A second export is the next version; the first stays intact.
    assert rqvae_savedmodel.export(model, str(tmp_path / "export")).endswith("2")
    assert rqvae_savedmodel.latest(str(tmp_path / "export")).endswith("2")


def _check_quality(report, min_utilisation, min_unique):
    for level in report["levels"]:
        assert level["utilisation"] >= min_utilisation, report["levels"]
    assert report["unique_sid_ratio"] >= min_unique
    cosines = [row["mean_cosine"] for row in report["prefix_similarity"] if row["mean_cosine"] is not None]
    assert len(cosines) >= 3 and np.all(np.diff(cosines) > 0), report["prefix_similarity"]


def test_demo_configuration_meets_the_sid_quality_bars(tmp_path, capsys):
    """The demo run: simulate, train on the day-0 catalogue, SIDs for every item (acceptance)."""
    run_dir = str(tmp_path / "demo")
    assert cli.main(["simulate", "--run_dir", run_dir, "--num_days", "2", "--impressions_per_day", "1000"]) == 0
    assert cli.main(["train-rqvae", "--run_dir", run_dir, "--max_first_day", "0"]) == 0
    out = capsys.readouterr().out
    assert "epoch   1" in out and "unique SIDs" in out and "shared prefix" in out
    with open(os.path.join(RunLayout(run_dir).rqvae, "sid_quality.json")) as f:
        report = json.load(f)
    _check_quality(report, min_utilisation=0.9, min_unique=0.95)
    assert report["reconstruction"]["r2"] > 0.5
    assert report["items"] == SimulatorConfig().num_items  # new items get SIDs too
    for name in ("rqvae_training.png", "sid_quality.png"):
        assert os.path.getsize(os.path.join(RunLayout(run_dir).report, name)) > 10_000


@pytest.mark.real_data
def test_movielens_embeddings_meet_the_sid_quality_bars(movielens_dir):
    from pipeline import movielens

    corpus, _ = movielens.load(movielens.MovieLensConfig(data_dir=movielens_dir), rejects_path=os.devnull)
    model, _ = rqvae_job.train(corpus.embeddings, RQVAEConfig(), lambda *_: None)
    sids = rqvae_job.encode(model, corpus.embeddings)
    report = sid_quality.report(sids, corpus.embeddings, corpus.item_ids, 256)
    _check_quality(report, min_utilisation=0.9, min_unique=0.95)
