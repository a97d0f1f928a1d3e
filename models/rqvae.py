"""RQ-VAE (paper section 3.2, appendix A.1): content embedding -> L codes, coarse to fine.

Loss = ||x - x_hat||^2 + sum_l beta * ||r_l - sg[e_l]||^2 + ||sg[r_l] - e_l||^2, with straight-
through gradients from the decoder to the encoder. Codes unused over `reset_interval` steps are
reset to residuals of random items of the current batch (the paper's remedy for codebook
collapse); `kmeans_init` optionally seeds each level by k-means on the residuals of the first items.
"""


import numpy as np
from pipeline.core.tf_env import tf

from pipeline.core.configs import RQVAEConfig  # noqa: F401  (re-exported beside the model)


def nearest_codes(residual: tf.Tensor, codebook: tf.Tensor) -> tf.Tensor:
    """Index of the nearest code (squared L2) for each row of residual [B, d] in codebook [K, d]."""
    distances = (tf.reduce_sum(tf.square(codebook), axis=1)[None, :]
                 - 2.0 * tf.matmul(residual, codebook, transpose_b=True))
    return tf.argmin(distances, axis=1, output_type=tf.int32)  # ||r||^2 is the same for every code


@tf.keras.utils.register_keras_serializable(package="sidrec")
class ResidualQuantizer(tf.keras.layers.Layer):
    """L codebooks of K codes; level l quantizes what levels 1..l-1 left over.

    call(z) returns (codes int32 [B, L], chosen code vectors [L, B, d], residuals [L, B, d]).
    """

    def __init__(self, num_levels: int, codebook_size: int, **kwargs):
        super().__init__(**kwargs)
        self.num_levels = num_levels
        self.codebook_size = codebook_size

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.codebooks = self.add_weight(
            name="codebooks", shape=(self.num_levels, self.codebook_size, dim),
            initializer=tf.keras.initializers.RandomNormal(stddev=1.0 / np.sqrt(dim)))
        # Code use since the last reset (not trained; drives the dead-code reset).
        self.usage = self.add_weight(name="usage", shape=(self.num_levels, self.codebook_size),
                                     initializer="zeros", trainable=False)
        super().build(input_shape)

    def call(self, z):
        residual = z
        codes, chosen, residuals = [], [], []
        for level in range(self.num_levels):
            codebook = self.codebooks[level]
            code = nearest_codes(residual, codebook)
            vector = tf.gather(codebook, code)
            codes.append(code)
            chosen.append(vector)
            residuals.append(residual)
            residual = residual - tf.stop_gradient(vector)
        return tf.stack(codes, axis=1), tf.stack(chosen), tf.stack(residuals)

    def record_usage(self, codes):
        counts = tf.stack([tf.math.bincount(codes[:, l], minlength=self.codebook_size,
                                            maxlength=self.codebook_size, dtype=tf.float32)
                           for l in range(self.num_levels)])
        self.usage.assign_add(counts)

    def reset_dead_codes(self, residuals, seed):
        """Sets every code unused since the last reset to the residual of a random batch item."""
        batch = tf.shape(residuals)[1]
        for level in range(self.num_levels):
            pick = tf.random.stateless_uniform([self.codebook_size], seed=tf.stack([seed, level]),
                                               maxval=batch, dtype=tf.int32)
            dead = self.usage[level] == 0
            fresh = tf.where(dead[:, None], tf.gather(residuals[level], pick), self.codebooks[level])
            self.codebooks[level].assign(fresh)
        dead_total = tf.reduce_sum(tf.cast(self.usage == 0, tf.int32))
        self.usage.assign(tf.zeros_like(self.usage))
        return dead_total

    def get_config(self):
        return {**super().get_config(), "num_levels": self.num_levels, "codebook_size": self.codebook_size}


def _mlp(widths, output_dim, name):
    layers = [tf.keras.layers.Dense(w, activation="relu", name=f"{name}_{i}") for i, w in enumerate(widths)]
    layers.append(tf.keras.layers.Dense(output_dim, name=f"{name}_out"))
    return tf.keras.Sequential(layers, name=name)


@tf.keras.utils.register_keras_serializable(package="sidrec")
class RQVAE(tf.keras.Model):
    """Encoder -> residual quantizer -> decoder; `call` returns the SID codes and the reconstruction."""

    def __init__(self, input_dim: int, encoder_dims=(256,), num_levels=4, codebook_size=256, beta=0.25,
                 reset_interval=20, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.encoder_dims = tuple(int(d) for d in encoder_dims)
        self.num_levels = int(num_levels)
        self.codebook_size = int(codebook_size)
        self.beta = float(beta)
        self.reset_interval = int(reset_interval)
        self.seed = int(seed)
        self.encoder = _mlp(self.encoder_dims[:-1], self.encoder_dims[-1], "encoder")
        self.quantizer = ResidualQuantizer(self.num_levels, self.codebook_size, name="quantizer")
        self.decoder = _mlp(self.encoder_dims[-2::-1], self.input_dim, "decoder")
        self.trackers = {name: tf.keras.metrics.Mean(name=name)
                         for name in ("loss", "recon_loss", "rq_loss", "dead_codes_reset")}

    @classmethod
    def from_config_dataclass(cls, input_dim: int, config: RQVAEConfig) -> "RQVAE":
        model = cls(input_dim, config.encoder_dims, config.num_levels, config.codebook_size, config.beta,
                    config.reset_interval, config.seed)
        model.build((None, input_dim))
        return model

    def build(self, input_shape):
        self.encoder.build(input_shape)
        self.quantizer.build((None, self.encoder_dims[-1]))
        self.decoder.build((None, self.encoder_dims[-1]))
        super().build(input_shape)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, x):
        codes, chosen, _ = self.quantizer(self.encoder(x))
        return {"sid": codes, "reconstruction": self.decoder(tf.reduce_sum(chosen, axis=0))}

    def compute_rq_losses(self, x):
        z = self.encoder(x)
        codes, chosen, residuals = self.quantizer(z)
        per_level = (self.beta * tf.reduce_sum(tf.square(residuals - tf.stop_gradient(chosen)), -1)
                     + tf.reduce_sum(tf.square(tf.stop_gradient(residuals) - chosen), -1))
        rq_loss = tf.reduce_mean(tf.reduce_sum(per_level, axis=0))
        quantized = tf.reduce_sum(chosen, axis=0)
        straight_through = z + tf.stop_gradient(quantized - z)
        recon_loss = tf.reduce_mean(tf.reduce_sum(tf.square(x - self.decoder(straight_through)), -1))
        return recon_loss, rq_loss, codes, residuals

    def train_step(self, x):
        with tf.GradientTape() as tape:
            recon_loss, rq_loss, codes, residuals = self.compute_rq_losses(x)
            loss = recon_loss + rq_loss
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.quantizer.record_usage(codes)
        reset = tf.constant(0, tf.int32)
        if self.reset_interval:
            step = tf.cast(self.optimizer.iterations, tf.int32)
            reset = tf.cond(step % self.reset_interval == 0,
                            lambda: self.quantizer.reset_dead_codes(residuals, self.seed * 1_000_003 + step),
                            lambda: tf.constant(0, tf.int32))
        for name, value in (("loss", loss), ("recon_loss", recon_loss), ("rq_loss", rq_loss),
                            ("dead_codes_reset", tf.cast(reset, tf.float32))):
            self.trackers[name].update_state(value)
        return {name: t.result() for name, t in self.trackers.items()}

    def test_step(self, x):
        recon_loss, rq_loss, _, _ = self.compute_rq_losses(x)
        for name, value in (("loss", recon_loss + rq_loss), ("recon_loss", recon_loss), ("rq_loss", rq_loss)):
            self.trackers[name].update_state(value)
        return {name: self.trackers[name].result() for name in ("loss", "recon_loss", "rq_loss")}

    def kmeans_init(self, x: np.ndarray, iterations: int) -> None:
        """Seeds each codebook by k-means on that level's residuals of x (level by level)."""
        residual = self.encoder(tf.constant(x, tf.float32))
        for level in range(self.num_levels):
            centroids = _kmeans(residual, self.codebook_size, iterations, seed=self.seed * 7919 + level)
            self.quantizer.codebooks[level].assign(centroids)
            residual = residual - tf.gather(centroids, nearest_codes(residual, centroids))

    def get_config(self):
        return {"input_dim": self.input_dim, "encoder_dims": list(self.encoder_dims),
                "num_levels": self.num_levels, "codebook_size": self.codebook_size, "beta": self.beta,
                "reset_interval": self.reset_interval, "seed": self.seed}


@tf.function(reduce_retracing=True)
def _kmeans(points, k, iterations, seed):
    """Lloyd's k-means from k distinct random points; an empty cluster keeps its centroid."""
    n = tf.shape(points)[0]
    start = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([seed, 0]))[:k]
    # With fewer points than codes, the extra codes start as jittered copies of the points.
    start = tf.gather(start, tf.range(k) % tf.size(start))
    jitter = 1e-3 * tf.random.stateless_normal([k, tf.shape(points)[1]], seed=tf.stack([seed, 1]))
    centroids = tf.gather(points, start) + jitter * tf.math.reduce_std(points)
    for _ in tf.range(iterations):
        assign = nearest_codes(points, centroids)
        sums = tf.math.unsorted_segment_sum(points, assign, k)
        counts = tf.math.unsorted_segment_sum(tf.ones([n]), assign, k)[:, None]
        centroids = tf.where(counts > 0, sums / tf.maximum(counts, 1.0), centroids)
    return centroids
