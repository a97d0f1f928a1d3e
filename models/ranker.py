"""The multitask watch-next ranker (TFRS): click (BCE, AUC) and engagement (watch fraction) tasks."""

import tensorflow as tf
import tensorflow_recommenders as tfrs

from pipeline import features as fk


@tf.keras.utils.register_keras_serializable(package="sidrec")
class MultitaskRanker(tfrs.Model):
    """A shared-bottom trunk over [watch, candidate, history, watch * candidate] and two heads.

    Args:
      item_encoder: a PieceItemEncoder or DenseItemEncoder.
      hidden_dims: trunk widths; `depth_multiplier` (1, 1.5 or 2 for the dense baselines) scales them.
      engagement_weight: weight of the engagement loss in the sum with the click loss.
    """

    def __init__(self, item_encoder: tf.keras.layers.Layer, hidden_dims=(128, 64), depth_multiplier: float = 1.0,
                 engagement_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.item_encoder = item_encoder
        self.hidden_dims = tuple(int(round(d * depth_multiplier)) for d in hidden_dims)
        self.depth_multiplier = depth_multiplier
        self.engagement_weight = engagement_weight
        self.trunk = tf.keras.Sequential([tf.keras.layers.Dense(d, activation="relu") for d in self.hidden_dims],
                                         name="trunk")
        self.click_head = tf.keras.layers.Dense(1, name="click_logit")
        self.engagement_head = tf.keras.layers.Dense(1, activation="sigmoid", name="engagement")
        self.click_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.AUC(from_logits=True, name="click_auc")])
        self.engagement_task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.MeanSquaredError(),
            metrics=[tf.keras.metrics.RootMeanSquaredError(name="engagement_rmse")])

    def call(self, features):
        items = self.item_encoder(features)
        parts = [items["watch"], items["candidate"], items["watch"] * items["candidate"]]
        if "history" in items:
            parts += [items["history"], items["history"] * items["candidate"]]
        hidden = self.trunk(tf.concat(parts, axis=-1))
        logit = self.click_head(hidden)
        return {"click_logit": logit, "click_probability": tf.sigmoid(logit),
                "engagement": self.engagement_head(hidden)}

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        outputs = self(inputs)
        click = tf.reshape(tf.cast(inputs[fk.CLICK], tf.float32), [-1, 1])
        engagement = tf.reshape(tf.cast(inputs[fk.ENGAGEMENT], tf.float32), [-1, 1])
        return (self.click_task(labels=click, predictions=outputs["click_logit"], training=training)
                + self.engagement_weight * self.engagement_task(
                    labels=engagement, predictions=outputs["engagement"], training=training))
