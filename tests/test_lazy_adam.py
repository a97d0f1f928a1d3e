"""LazyAdam: rows not looked up keep their values and moments; looked-up rows get Adam's update by hand."""

import numpy as np
import tensorflow as tf

from models.item_encoder import PieceItemEncoder
from models.lazy_adam import LazyAdam
from models.ranker import MultitaskRanker, ranker_optimizer
from pipeline.core import features as fk
from tests.test_ranker import _features

LR, B1, B2, EPS = 0.1, 0.9, 0.999, 1e-7


def _adam_rows(grad, m, v, step):
    """Keras Adam's update of the given rows, by hand."""
    m = B1 * m + (1 - B1) * grad
    v = B2 * v + (1 - B2) * grad ** 2
    lr = LR * np.sqrt(1 - B2 ** step) / (1 - B1 ** step)
    return lr * m / (np.sqrt(v) + EPS), m, v


def test_a_sparse_step_moves_only_the_looked_up_rows_moments_included():
    table = tf.Variable(np.arange(12, dtype=np.float32).reshape(6, 2))
    optimizer = LazyAdam(LR)
    start = table.numpy().copy()
    # Step 1 touches rows 1 and 4 (row 4 twice: the rows are summed first); step 2 only row 2.
    g1 = tf.IndexedSlices(tf.constant([[1.0, -2.0], [0.5, 0.5], [0.5, 0.5]]), tf.constant([1, 4, 4]), [6, 2])
    optimizer.apply_gradients([(g1, table)])
    after_one = table.numpy().copy()
    m, v = (optimizer.get_slot(table, name).numpy().copy() for name in ("m", "v"))
    g2 = tf.IndexedSlices(tf.constant([[3.0, 1.0]]), tf.constant([2]), [6, 2])
    optimizer.apply_gradients([(g2, table)])

    step1_rows = {1: np.array([1.0, -2.0]), 4: np.array([1.0, 1.0])}
    for row, grad in step1_rows.items():
        delta, m_row, v_row = _adam_rows(grad, 0.0, 0.0, 1)
        np.testing.assert_allclose(after_one[row], start[row] - delta, rtol=1e-4)
        np.testing.assert_allclose(m[row], m_row, rtol=1e-4)
        np.testing.assert_allclose(v[row], v_row, rtol=1e-4)
    for row in (0, 2, 3, 5):  # not looked up in step 1: value and moments untouched
        np.testing.assert_array_equal(after_one[row], start[row])
        np.testing.assert_array_equal(m[row], 0.0)
        np.testing.assert_array_equal(v[row], 0.0)
    # Step 2: only row 2 moves; rows 1 and 4 keep step 1's values and moments (plain Adam would move them).
    delta, _, _ = _adam_rows(np.array([3.0, 1.0]), 0.0, 0.0, 2)
    np.testing.assert_allclose(table.numpy()[2], start[2] - delta, rtol=1e-4)
    for row in (0, 1, 3, 4, 5):
        np.testing.assert_array_equal(table.numpy()[row], after_one[row])
    np.testing.assert_array_equal(np.delete(optimizer.get_slot(table, "m").numpy(), 2, axis=0),
                                  np.delete(m, 2, axis=0))
    np.testing.assert_array_equal(np.delete(optimizer.get_slot(table, "v").numpy(), 2, axis=0),
                                  np.delete(v, 2, axis=0))


def _features_on_rows_6_to_9():
    features = _features()
    features.update({fk.WATCH_PIECES: tf.ragged.constant([[6], [7, 8]], dtype=tf.int64).to_sparse(),
                     fk.CANDIDATE_PIECES: tf.ragged.constant([[9], [6]], dtype=tf.int64).to_sparse(),
                     fk.HISTORY_PIECES: tf.ragged.constant([[7, 9], []], dtype=tf.int64).to_sparse()})
    return features


def test_two_ranker_steps_on_other_rows_leave_the_first_step_s_rows_and_moments_alone():
    """Step 1 looks up rows 0-5, step 2 rows 6-9. Plain Adam, or a densified gradient reaching the table,
    would move rows 0-5 again in step 2 (their first moment is not zero any more) and decay their moments."""
    ranker = MultitaskRanker(PieceItemEncoder(table_rows=10, dim=4))
    ranker.compile(optimizer=ranker_optimizer(ranker, 0.01))
    ranker(_features())
    [table] = ranker.item_encoder.trainable_variables
    table_optimizer = ranker.item_encoder.table_optimizer
    assert isinstance(table_optimizer, LazyAdam)

    def moments():
        return {name: table_optimizer.get_slot(table, name).numpy().copy() for name in ("m", "v")}

    before = table.numpy().copy()
    ranker.fit(tf.data.Dataset.from_tensors(_features()), epochs=1, verbose=0)  # rows 0-5
    after_one, moments_one = table.numpy().copy(), moments()
    assert np.all(np.abs(after_one[:6] - before[:6]).sum(axis=1) > 0)
    np.testing.assert_array_equal(after_one[6:], before[6:])
    for values in moments_one.values():
        assert np.all(np.abs(values[:6]).sum(axis=1) > 0)
        np.testing.assert_array_equal(values[6:], 0.0)

    ranker.fit(tf.data.Dataset.from_tensors(_features_on_rows_6_to_9()), epochs=1, verbose=0)  # rows 6-9
    after_two, moments_two = table.numpy(), moments()
    assert np.all(np.abs(after_two[6:] - after_one[6:]).sum(axis=1) > 0)
    np.testing.assert_array_equal(after_two[:6], after_one[:6])
    for name, values in moments_two.items():
        assert np.all(np.abs(values[6:]).sum(axis=1) > 0), name
        np.testing.assert_array_equal(values[:6], moments_one[name][:6], err_msg=name)


def test_the_tpu_mid_level_optimizer_is_lazy_adam_at_the_table_rate():
    encoder = PieceItemEncoder(table_rows=10, dim=4, learning_rate=0.03)
    mid_level = encoder.embedding._optimizer
    assert isinstance(mid_level, tf.tpu.experimental.embedding.Adam)
    assert mid_level.lazy_adam and mid_level.learning_rate == 0.03


def test_config_round_trip():
    optimizer = LazyAdam.from_config(LazyAdam(0.25, beta_1=0.5).get_config())
    assert isinstance(optimizer, LazyAdam)
    assert optimizer.get_config()["learning_rate"] == 0.25 and optimizer.get_config()["beta_1"] == 0.5
