"""Item representations for the ranker: pieces -> vectors from one shared table, or dense content.

The watch item, the candidate and every history item look up the same table (a TPUEmbedding
table: ordinary variables on CPU, sharded TPU tables under TPUStrategy). An item's vector is the
sum of its pieces' rows; the history is the mean of its items' vectors.
"""

from pipeline.core.tf_env import tf
import tensorflow_recommenders as tfrs

from pipeline.core import features as fk

PIECE_KEYS = (fk.WATCH_PIECES, fk.CANDIDATE_PIECES, fk.HISTORY_PIECES)


@tf.keras.utils.register_keras_serializable(package="sidrec")
class PieceItemEncoder(tf.keras.layers.Layer):
    """random_hash / sid_ngram / sid_spm pieces -> {"watch", "candidate", "history"} vectors [B, dim].

    Args:
      table_rows: rows of the shared item table (RepresentationConfig.table_rows).
      dim: embedding dimension.
      use_history: False drops the history feature (the paper's setting without history).
      learning_rate: of the table's own Adam (legacy: TPUEmbedding refuses the new Keras optimizers).
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
        # The table's own optimizer: TPUEmbedding applies it on TPU; on CPU the ranker's composite
        # optimizer applies it to the table (see models.ranker.ranker_optimizer).
        self.table_optimizer = tf.keras.optimizers.legacy.Adam(learning_rate)
        self.embedding = tfrs.layers.embedding.TPUEmbedding(
            {key: tf.tpu.experimental.embedding.FeatureConfig(table=table, name=key) for key in keys},
            self.table_optimizer)

    def call(self, features):
        keys = PIECE_KEYS if self.use_history else PIECE_KEYS[:2]
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
