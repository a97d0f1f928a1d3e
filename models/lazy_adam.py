"""Lazy Adam for embedding tables on CPU/GPU: only the rows a step looks up move, as on TPU.

TPUEmbedding's Adam on TPU is lazy (`tf.tpu.experimental.embedding.Adam(lazy_adam=True)`, its
default): a row that no example of the step looked up keeps its value and both moments. The legacy
Keras Adam instead decays the moments of every row and moves every row on every sparse step, so a
CPU run would train differently from the TPU run it stands for and its step would cost O(table rows).
This optimizer applies the same update as Keras Adam to the looked-up rows only (the update of
tf-addons' LazyAdam), so a step costs O(rows looked up).
"""

from pipeline.core.tf_env import tf


@tf.keras.utils.register_keras_serializable(package="sidrec")
class LazyAdam(tf.keras.optimizers.legacy.Adam):
    """Keras (legacy) Adam whose sparse updates touch only the gradient's rows.

    Dense gradients (dense layers, or a table whose gradient was densified) get plain Adam.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 name="LazyAdam", **kwargs):
        if amsgrad:
            raise ValueError("LazyAdam has no amsgrad variant (neither has TPUEmbedding's Adam)")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=False, name=name, **kwargs)

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        # Indices arrive deduplicated (OptimizerV2 sums repeated rows first). TPUEmbedding's CPU lookup
        # (safe_embedding_lookup_sparse) gathers row 0 for every input without pieces (an empty history)
        # and masks it out, so row 0 comes back with a zero gradient although nothing looked it up: a row
        # whose gradient is all zero is left alone, as TPUEmbedding leaves it.
        looked_up = tf.reduce_any(tf.reshape(tf.not_equal(grad, 0), [tf.shape(indices)[0], -1]), axis=1)
        grad, indices = tf.boolean_mask(grad, looked_up), tf.boolean_mask(indices, looked_up)
        dtype = var.dtype.base_dtype
        coefficients = ((apply_state or {}).get((var.device, dtype))
                        or self._fallback_apply_state(var.device, dtype))
        beta_1, beta_2 = coefficients["beta_1_t"], coefficients["beta_2_t"]
        m, v = self.get_slot(var, "m"), self.get_slot(var, "v")
        m_rows = beta_1 * tf.gather(m, indices) + coefficients["one_minus_beta_1_t"] * grad
        v_rows = beta_2 * tf.gather(v, indices) + coefficients["one_minus_beta_2_t"] * tf.square(grad)
        # coefficients["lr"] = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t), as in Keras Adam's own update.
        step = coefficients["lr"] * m_rows / (tf.sqrt(v_rows) + coefficients["epsilon"])
        return tf.group(self._resource_scatter_update(m, indices, m_rows),
                        self._resource_scatter_update(v, indices, v_rows),
                        self._resource_scatter_sub(var, indices, step))

    def _resource_scatter_sub(self, x, i, v):
        return x.scatter_sub(tf.IndexedSlices(v, i))
