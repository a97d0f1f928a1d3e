"""Item encoders and the multitask ranker: shapes, pooling by hand, loss by hand, save and restore."""

import math

import numpy as np
import pytest
import tensorflow as tf

from models.item_encoder import DenseItemEncoder, PieceItemEncoder
from models.ranker import MultitaskRanker, ranker_optimizer
from models.trunks import TASKS, MMoE
from pipeline.core import features as fk


def _features():
    return {
        fk.WATCH_PIECES: tf.ragged.constant([[1, 2], [3]], dtype=tf.int64).to_sparse(),
        fk.CANDIDATE_PIECES: tf.ragged.constant([[0], [4, 5]], dtype=tf.int64).to_sparse(),
        fk.HISTORY_PIECES: tf.ragged.constant([[1, 3, 5], []], dtype=tf.int64).to_sparse(),
        fk.HISTORY_LENGTH: tf.constant([2, 0], tf.int64),
        fk.CLICK: tf.constant([1, 0], tf.int64),
        fk.ENGAGEMENT: tf.constant([1.0, 0.0]),
    }


TABLE = np.array([[0, 0], [1, 0], [0, 1], [2, 2], [1, 1], [3, 0]], np.float32)


def _encoder(**kwargs):
    encoder = PieceItemEncoder(table_rows=6, dim=2, **kwargs)
    encoder(_features())
    [table] = encoder.trainable_variables
    table.assign(TABLE)
    return encoder


def test_pieces_are_summed_and_the_history_is_the_mean_of_its_items():
    out = _encoder()(_features())
    np.testing.assert_allclose(out["watch"], [[1, 1], [2, 2]])  # rows 1+2, row 3
    np.testing.assert_allclose(out["candidate"], [[0, 0], [4, 1]])  # row 0, rows 4+5
    # Row 0: pieces 1, 3, 5 of two history items, summed then divided by 2; row 1: empty history.
    np.testing.assert_allclose(out["history"], [[3, 1], [0, 0]])


def test_one_table_is_shared_and_history_can_be_dropped():
    encoder = _encoder(use_history=False)
    assert len(encoder.trainable_variables) == 1 and encoder.trainable_variables[0].shape == (6, 2)
    assert set(encoder(_features())) == {"watch", "candidate"}
    with pytest.raises(ValueError, match="table_rows"):
        PieceItemEncoder(table_rows=0)


def test_layer_configs_round_trip():
    encoder = PieceItemEncoder.from_config(PieceItemEncoder(table_rows=9, dim=3, use_history=False).get_config())
    assert (encoder.table_rows, encoder.dim, encoder.use_history) == (9, 3, False)
    assert DenseItemEncoder.from_config(DenseItemEncoder(dim=5).get_config()).dim == 5


@pytest.mark.parametrize("multiplier, layers", [(1, 2), (1.5, 3), (2, 4)])
def test_depth_multiplier_adds_layers_at_the_base_widths(multiplier, layers):
    """The paper's 1.5x / 2x are layers: 2 -> 3 -> 4 Dense layers in the trunk, widths unchanged."""
    features = {fk.WATCH_EMBEDDING: tf.ones([3, 8]), fk.CANDIDATE_EMBEDDING: tf.zeros([3, 8]),
                fk.CLICK: tf.constant([1, 0, 1]), fk.ENGAGEMENT: tf.constant([0.5, 0.0, 1.0])}
    ranker = MultitaskRanker(DenseItemEncoder(dim=4), hidden_dims=(16, 8), depth_multiplier=multiplier)
    out = ranker(features)
    dense = [layer for layer in ranker.trunk.mlp.layers if isinstance(layer, tf.keras.layers.Dense)]
    assert len(dense) == layers
    assert [layer.units for layer in dense] == [16, 8] + [8] * (layers - 2)
    assert out["click_probability"].shape == (3, 1) and out["engagement"].shape == (3, 1)


def test_depth_multiplier_that_leaves_no_layer_is_refused():
    with pytest.raises(ValueError, match="leaves no layer"):
        MultitaskRanker(DenseItemEncoder(dim=4), hidden_dims=(16, 8), depth_multiplier=0.1)


def test_loss_by_hand_on_two_rows():
    ranker = MultitaskRanker(_encoder(), hidden_dims=(4,))
    ranker(_features())
    for head in (ranker.click_head, ranker.engagement_head):
        head.kernel.assign(tf.zeros_like(head.kernel))
        head.bias.assign(tf.zeros_like(head.bias))
    # Click logit 0 -> BCE ln 2 on both rows; engagement sigmoid(0) = 0.5 -> MSE ((0.5)^2 + (0.5)^2) / 2.
    loss = ranker.compute_loss(_features())
    assert float(loss) == pytest.approx(math.log(2) + 0.25, rel=1e-5)


def _synthetic(n=2048, seed=0):
    rng = np.random.default_rng(seed)
    candidate = rng.integers(0, 50, n)
    click = (candidate % 2 == 0).astype(np.int64)  # memorisable per item
    features = {
        fk.WATCH_PIECES: tf.ragged.constant(rng.integers(0, 50, (n, 1)).tolist(), dtype=tf.int64).to_sparse(),
        fk.CANDIDATE_PIECES: tf.ragged.constant(candidate[:, None].tolist(), dtype=tf.int64).to_sparse(),
        fk.HISTORY_PIECES: tf.ragged.constant(rng.integers(0, 50, (n, 2)).tolist(), dtype=tf.int64).to_sparse(),
        fk.HISTORY_LENGTH: tf.fill([n], tf.constant(2, tf.int64)),
        fk.CLICK: tf.constant(click), fk.ENGAGEMENT: tf.constant(click * 0.8, tf.float32)}
    return tf.data.Dataset.from_tensor_slices(features).batch(256)


def test_training_learns_and_a_checkpoint_restores_the_same_model(tmp_path):
    tf.keras.utils.set_random_seed(0)
    ranker = MultitaskRanker(PieceItemEncoder(table_rows=50, dim=8), hidden_dims=(16,))
    ranker.compile(optimizer=ranker_optimizer(ranker, 0.01))
    ranker.fit(_synthetic(), epochs=3, verbose=0)
    metrics = ranker.evaluate(_synthetic(seed=1), return_dict=True, verbose=0)
    assert metrics["click_auc"] > 0.9
    path = tf.train.Checkpoint(model=ranker).save(str(tmp_path / "ckpt"))
    restored = MultitaskRanker(PieceItemEncoder(table_rows=50, dim=8), hidden_dims=(16,))
    batch = next(iter(_synthetic(seed=2)))
    restored(batch)
    tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
    np.testing.assert_allclose(restored(batch)["click_probability"], ranker(batch)["click_probability"], rtol=1e-6)


def test_mmoe_mixes_experts_with_one_softmax_gate_per_task():
    x = tf.random.stateless_normal([5, 6], seed=[1, 2])
    mmoe = MMoE(hidden_dims=(4,), num_experts=3)
    out = mmoe(x)
    experts = np.stack([e(x).numpy() for e in mmoe.experts], axis=1)  # [B, E, H]
    for task, gate in zip(TASKS, mmoe.gates):
        weights = gate(x).numpy()
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(out[task], np.einsum("be,beh->bh", weights, experts), rtol=1e-5)
    # One expert: every gate is 1 and MMoE is that expert, i.e. a shared bottom.
    single = MMoE(hidden_dims=(4,), num_experts=1)
    np.testing.assert_allclose(single(x)["click"], single.experts[0](x), rtol=1e-6)
    assert MMoE.from_config(mmoe.get_config()).num_experts == 3
    with pytest.raises(ValueError, match="num_experts"):
        MMoE(num_experts=0)


def test_ranker_config_round_trip_and_mmoe_ranker_learns():
    tf.keras.utils.set_random_seed(0)
    ranker = MultitaskRanker(PieceItemEncoder(table_rows=50, dim=8), hidden_dims=(16,), depth_multiplier=2.0,
                             trunk="mmoe", num_experts=2)
    copy = MultitaskRanker.from_config(ranker.get_config())
    assert (copy.hidden_dims, copy.trunk_kind, copy.num_experts, copy.item_encoder.table_rows) == ((16, 16), "mmoe", 2, 50)  # 2x: two layers
    ranker.compile(optimizer=tf.keras.optimizers.legacy.Adam(0.01))
    ranker.fit(_synthetic(), epochs=3, verbose=0)
    assert ranker.evaluate(_synthetic(seed=1), return_dict=True, verbose=0)["click_auc"] > 0.9
    with pytest.raises(ValueError, match="trunk"):
        MultitaskRanker(DenseItemEncoder(), trunk="towers")


@pytest.mark.parametrize("table_learning_rate", [0.0, 0.5])
def test_the_table_is_trained_by_its_own_optimizer_on_cpu(table_learning_rate):
    """As under TPUStrategy: the table follows the encoder's own optimizer, the dense layers theirs."""
    tf.keras.utils.set_random_seed(0)
    ranker = MultitaskRanker(PieceItemEncoder(table_rows=50, dim=8, learning_rate=table_learning_rate),
                             hidden_dims=(16,))
    batch = next(iter(_synthetic()))
    ranker(batch)
    table = ranker.item_encoder.trainable_variables[0].numpy()
    dense = ranker.click_head.kernel.numpy()
    ranker.compile(optimizer=ranker_optimizer(ranker, 0.01))
    ranker.fit(tf.data.Dataset.from_tensors(batch), verbose=0)  # one step
    moved = np.abs(ranker.item_encoder.trainable_variables[0].numpy() - table).max()
    assert (moved == 0) if table_learning_rate == 0 else (moved > 1e-3)
    assert np.abs(ranker.click_head.kernel.numpy() - dense).max() > 0
    assert any(w.shape == (50, 8) for w in ranker.item_encoder.table_optimizer.weights)  # its Adam moments
