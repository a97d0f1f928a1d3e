"""RQ-VAE: quantizer by hand, dead-code reset, save/load, determinism, export, SID quality bars."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from models import rqvae_savedmodel
from models.rqvae import RQVAE, RQVAEConfig, ResidualQuantizer
from pipeline import cli
from pipeline.stages import train_rqvae as rqvae_job
from pipeline.sid import sid_quality
from pipeline.core.layout import RunLayout
from pipeline.stages.simulate import to_corpus
from pipeline.data.simulator import SimulatorConfig, simulate
import worlds

# Three levels and frequent resets, so the reset path runs within a few epochs.
TINY = dataclasses.replace(worlds.TINY, num_levels=3, max_epochs=8, patience=3, reset_interval=5)


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
    from pipeline.data import movielens

    corpus, _ = movielens.load(movielens.MovieLensConfig(data_dir=movielens_dir), rejects_path=os.devnull)
    model, _ = rqvae_job.train(corpus.embeddings, RQVAEConfig(), lambda *_: None)
    sids = rqvae_job.encode(model, corpus.embeddings)
    report = sid_quality.report(sids, corpus.embeddings, corpus.item_ids, 256)
    _check_quality(report, min_utilisation=0.9, min_unique=0.95)


def _gradients(model, x, loss_name):
    """{part: gradients} of one RQ-VAE loss term for the encoder, the codebooks and the decoder."""
    parts = {"encoder": model.encoder.trainable_variables, "codebooks": [model.quantizer.codebooks],
             "decoder": model.decoder.trainable_variables}
    with tf.GradientTape(persistent=True) as tape:
        recon_loss, rq_loss, _, _ = model.compute_rq_losses(x)
    loss = {"recon": recon_loss, "rq": rq_loss}[loss_name]
    return {part: [g for g in tape.gradient(loss, variables, unconnected_gradients="zero")]
            for part, variables in parts.items()}


def _norm(gradients) -> float:
    return float(sum(tf.reduce_sum(tf.square(g)) for g in gradients))


def test_each_loss_term_reaches_exactly_the_variables_it_should():
    """Stop-gradients and the straight-through estimator, checked with a GradientTape.

    Reconstruction: encoder (straight through the argmin) and decoder, never the codebooks.
    Commitment beta ||r - sg[e]||^2: the encoder only. Codebook ||sg[r] - e||^2: the codebooks only.
    """
    x = tf.random.stateless_normal([64, 12], seed=[1, 2])
    models = {beta: RQVAE(12, (16, 8), num_levels=2, codebook_size=8, beta=beta) for beta in (0.0, 0.25, 0.5)}
    for model in models.values():
        model.build((None, 12))
        model.set_weights(models[0.0].get_weights())  # one set of weights; only beta differs

    recon = _gradients(models[0.25], x, "recon")
    assert _norm(recon["encoder"]) > 0 and _norm(recon["decoder"]) > 0  # straight-through reaches the encoder
    assert _norm(recon["codebooks"]) == 0

    codebook_only = _gradients(models[0.0], x, "rq")  # beta 0: the codebook term alone
    assert _norm(codebook_only["encoder"]) == 0 and _norm(codebook_only["decoder"]) == 0
    # By hand: d/de_k of mean_b sum_l ||r_l - e_l||^2 is 2/B sum over the rows choosing code k of (e_k - r_l).
    codes, chosen, residuals = models[0.0].quantizer(models[0.0].encoder(x))
    expected = np.zeros((2, 8, 8), np.float32)
    for level in range(2):
        for row in range(64):
            expected[level, codes[row, level]] += 2 / 64 * (chosen[level, row] - residuals[level, row]).numpy()
    np.testing.assert_allclose(codebook_only["codebooks"][0].numpy(), expected, rtol=1e-4, atol=1e-6)

    # The commitment term reaches the encoder, in proportion to beta, and nothing else does.
    quarter, half = (_gradients(models[beta], x, "rq") for beta in (0.25, 0.5))
    assert _norm(quarter["encoder"]) > 0 and _norm(quarter["decoder"]) == 0
    for a, b in zip(quarter["encoder"], half["encoder"]):
        np.testing.assert_allclose(2 * a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(quarter["codebooks"][0].numpy(), expected, rtol=1e-4, atol=1e-6)
