"""Item representations for the ranker: pieces -> vectors from one shared table, or dense content.

The watch item, the candidate and every history item look up the same table (a TPUEmbedding
table: ordinary variables on CPU, sharded TPU tables under TPUStrategy). An item's vector is the
sum of its pieces' rows; the history is the mean of its items' vectors.
"""

from pipeline.core.tf_env import tf
import tensorflow_recommenders as tfrs

from models.lazy_adam import LazyAdam
from pipeline.core import features as fk

PIECE_KEYS = (fk.WATCH_PIECES, fk.CANDIDATE_PIECES, fk.HISTORY_PIECES)


def _string_variables_stay_local(next_creator, **kwargs):
    """Off TPU, TPUEmbedding keeps a string variable for SparseCore layouts (empty, dropped once built).

    MultiWorkerMirroredStrategy broadcasts every variable's initial value, and its collectives refuse
    strings, so that one is made as a plain local variable; every other variable is the strategy's.
    """
    if kwargs.get("dtype") != tf.string or not isinstance(tf.distribute.get_strategy(),
                                                          tf.distribute.MultiWorkerMirroredStrategy):
        return next_creator(**kwargs)
    from tensorflow.python.ops import resource_variable_ops  # a creator that skips the strategy's

    return resource_variable_ops.ResourceVariable(
        initial_value=kwargs["initial_value"], name=kwargs.get("name"), dtype=tf.string, trainable=False)


@tf.keras.utils.register_keras_serializable(package="sidrec")
class PieceItemEncoder(tf.keras.layers.Layer):
    """random_hash / sid_ngram / sid_spm pieces -> {"watch", "candidate", "history"} vectors [B, dim].

    Args:
      table_rows: rows of the shared item table (RepresentationConfig.table_rows).
      dim: embedding dimension.
      use_history: False drops the history feature (the paper's setting without history).
      learning_rate: of the table's own lazy Adam: on TPU TPUEmbedding applies
        `tf.tpu.experimental.embedding.Adam(lazy_adam=True)`; elsewhere the ranker's composite optimizer
        applies `LazyAdam`, the same update, so rows not looked up in a step keep their values and moments.
    """

    def __init__(self, table_rows: int, dim: int = 32, use_history: bool = True, learning_rate: float = 0.02,
                 **kwargs):
        super().__init__(**kwargs)
        if table_rows < 1:
            raise ValueError(f"table_rows must be >= 1, got {table_rows}")
        self.table_rows, self.dim, self.use_history, self.learning_rate = table_rows, dim, use_history, learning_rate
        table = tf.tpu.experimental.embedding.TableConfig(
            vocabulary_size=table_rows, dim=dim, combiner="sum", name="items",
            initializer=tf.keras.initializers.TruncatedNormal(stddev=1.0 / dim ** 0.5))
        keys = PIECE_KEYS if use_history else PIECE_KEYS[:2]
        # The table's own optimizer, lazy on every device: TPUEmbedding applies the mid-level one on
        # TPU; on CPU/GPU the ranker's composite optimizer applies LazyAdam to the table
        # (models.ranker.ranker_optimizer).
        self.table_optimizer = LazyAdam(learning_rate)
        self.embedding = tfrs.layers.embedding.TPUEmbedding(
            {key: tf.tpu.experimental.embedding.FeatureConfig(table=table, name=key) for key in keys},
            tf.tpu.experimental.embedding.Adam(learning_rate, lazy_adam=True))

    def call(self, features):
        keys = PIECE_KEYS if self.use_history else PIECE_KEYS[:2]
        with tf.variable_creator_scope(_string_variables_stay_local):  # the tables are made on the first call
            vectors = self.embedding({key: features[key] for key in keys})
        out = {"watch": vectors[fk.WATCH_PIECES], "candidate": vectors[fk.CANDIDATE_PIECES]}
        if self.use_history:
            length = tf.cast(tf.reshape(features[fk.HISTORY_LENGTH], [-1, 1]), tf.float32)
            out["history"] = vectors[fk.HISTORY_PIECES] / tf.maximum(length, 1.0)
        return out

    def get_config(self):
        return {**super().get_config(), "table_rows": self.table_rows, "dim": self.dim,
                "use_history": self.use_history, "learning_rate": self.learning_rate}


@tf.keras.utils.register_keras_serializable(package="sidrec")
class DenseItemEncoder(tf.keras.layers.Layer):
    """The dense baseline: watch and candidate content embeddings through one shared projection."""

    def __init__(self, dim: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.projection = tf.keras.layers.Dense(dim, name="content_projection")

    def call(self, features):
        return {"watch": self.projection(features[fk.WATCH_EMBEDDING]),
                "candidate": self.projection(features[fk.CANDIDATE_EMBEDDING])}

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}
