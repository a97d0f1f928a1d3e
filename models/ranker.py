"""The multitask watch-next ranker (TFRS): click (BCE, AUC) and engagement (watch fraction) tasks."""

from pipeline.core.tf_env import tf
import tensorflow_recommenders as tfrs

from models.trunks import build_trunk
from pipeline.core import features as fk


def deeper(hidden_dims, depth_multiplier: float) -> tuple[int, ...]:
    """round(m x layers) layers at the base widths; added layers repeat the last width.

    (128, 64) at 1x, 1.5x, 2x: (128, 64), (128, 64, 64), (128, 64, 64, 64).

    Raises:
      ValueError: no widths, or a multiplier that leaves no layer.
    """
    hidden_dims = tuple(int(d) for d in hidden_dims)
    layers = int(depth_multiplier * len(hidden_dims) + 0.5)  # half rounds up: 1.5 x 1 layer -> 2
    if not hidden_dims or layers < 1:
        raise ValueError(f"depth_multiplier {depth_multiplier} x {len(hidden_dims)} layers leaves no layer")
    return hidden_dims[:layers] + hidden_dims[-1:] * (layers - len(hidden_dims))


@tf.keras.utils.register_keras_serializable(package="sidrec")
class MultitaskRanker(tfrs.Model):
    """A trunk over [watch, candidate, watch * candidate, history, history * candidate] and two heads.

    Args:
      item_encoder: a PieceItemEncoder or DenseItemEncoder.
      hidden_dims: trunk widths, one layer each.
      depth_multiplier: the paper's "1.5x-2x layers" for the dense baselines: the trunk gets
        round(m x layers) layers at the base widths (see `deeper`).
      engagement_weight: weight of the engagement loss in the sum with the click loss.
      trunk: "shared_bottom" or "mmoe" (`num_experts` experts, one gate per task).
    """

    def __init__(self, item_encoder: tf.keras.layers.Layer, hidden_dims=(128, 64), depth_multiplier: float = 1.0,
                 engagement_weight: float = 1.0, trunk: str = "shared_bottom", num_experts: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.item_encoder = item_encoder
        self.base_hidden_dims = tuple(hidden_dims)
        self.hidden_dims = deeper(hidden_dims, depth_multiplier)
        self.depth_multiplier = depth_multiplier
        self.engagement_weight = engagement_weight
        self.trunk_kind, self.num_experts = trunk, num_experts
        self.trunk = build_trunk(trunk, self.hidden_dims, num_experts)
        self.click_head = tf.keras.layers.Dense(1, name="click_logit")
        self.engagement_head = tf.keras.layers.Dense(1, activation="sigmoid", name="engagement")
        # Summed per replica and divided by the global batch in compute_loss: the mean over the global
        # batch under any tf.distribute strategy (Keras refuses batch-mean losses under one).
        sum_reduction = tf.keras.losses.Reduction.SUM
        self.click_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True, reduction=sum_reduction),
            metrics=[tf.keras.metrics.AUC(from_logits=True, name="click_auc")])
        self.engagement_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.MeanSquaredError(reduction=sum_reduction),
            metrics=[tf.keras.metrics.RootMeanSquaredError(name="engagement_rmse")])

    def call(self, features):
        items = self.item_encoder(features)
        parts = [items["watch"], items["candidate"], items["watch"] * items["candidate"]]
        if "history" in items:
            parts += [items["history"], items["history"] * items["candidate"]]
        hidden = self.trunk(tf.concat(parts, axis=-1))
        logit = self.click_head(hidden["click"])
        return {"click_logit": logit, "click_probability": tf.sigmoid(logit),
                "engagement": self.engagement_head(hidden["engagement"])}

    def get_config(self):
        return {"item_encoder": tf.keras.layers.serialize(self.item_encoder), "hidden_dims": self.base_hidden_dims,
                "depth_multiplier": self.depth_multiplier, "engagement_weight": self.engagement_weight,
                "trunk": self.trunk_kind, "num_experts": self.num_experts}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "item_encoder": tf.keras.layers.deserialize(config["item_encoder"])})

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        outputs = self(inputs)
        click = tf.reshape(tf.cast(inputs[fk.CLICK], tf.float32), [-1, 1])
        engagement = tf.reshape(tf.cast(inputs[fk.ENGAGEMENT], tf.float32), [-1, 1])
        global_batch = tf.cast(tf.shape(click)[0] * tf.distribute.get_strategy().num_replicas_in_sync, tf.float32)
        summed = (self.click_task(labels=click, predictions=outputs["click_logit"], training=training)
                  + self.engagement_weight * self.engagement_task(
                      labels=engagement, predictions=outputs["engagement"], training=training))
        return tf.math.divide_no_nan(summed, global_batch)  # a replica's share of a last batch can be empty


def ranker_optimizer(model: MultitaskRanker, learning_rate: float) -> tf.keras.optimizers.legacy.Optimizer:
    """Adam on the dense layers; the item table keeps the encoder's own optimizer, on CPU as on TPU.

    Under TPUStrategy, TPUEmbedding applies its optimizer to the tables itself; on CPU the tables are
    ordinary variables, which one compiled optimizer would otherwise train with the dense layers' Adam.
    """
    dense = tf.keras.optimizers.legacy.Adam(learning_rate)
    table_optimizer = getattr(model.item_encoder, "table_optimizer", None)
    if table_optimizer is None:
        return dense
    table_ids = lambda: {id(v) for v in model.item_encoder.trainable_variables}  # noqa: E731
    return tfrs.experimental.optimizers.CompositeOptimizer([
        (dense, lambda: [v for v in model.trainable_variables if id(v) not in table_ids()]),
        (table_optimizer, lambda: model.item_encoder.trainable_variables)])
