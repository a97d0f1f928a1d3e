"""Multitask trunks: one hidden vector per task, from a shared bottom or a multi-gate mixture of experts."""

from pipeline.core.configs import TRUNKS
from pipeline.core.tf_env import tf

TASKS = ("click", "engagement")


def _mlp(hidden_dims, name: str) -> tf.keras.Sequential:
    return tf.keras.Sequential([tf.keras.layers.Dense(d, activation="relu") for d in hidden_dims], name=name)


@tf.keras.utils.register_keras_serializable(package="sidrec")
class SharedBottom(tf.keras.layers.Layer):
    """One MLP whose output every task reads."""

    def __init__(self, hidden_dims=(128, 64), **kwargs):
        super().__init__(**kwargs)
        self.hidden_dims = tuple(hidden_dims)
        self.mlp = _mlp(self.hidden_dims, "bottom")

    def call(self, inputs):
        hidden = self.mlp(inputs)
        return {task: hidden for task in TASKS}

    def get_config(self):
        return {**super().get_config(), "hidden_dims": self.hidden_dims}


@tf.keras.utils.register_keras_serializable(package="sidrec")
class MMoE(tf.keras.layers.Layer):
    """Multi-gate mixture of experts (Ma et al., KDD 2018): shared experts, one softmax gate per task.

    Task t reads sum_e gate_t(x)_e * expert_e(x), so tasks that disagree can lean on different experts.
    """

    def __init__(self, hidden_dims=(128, 64), num_experts: int = 4, **kwargs):
        super().__init__(**kwargs)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.hidden_dims, self.num_experts = tuple(hidden_dims), num_experts
        self.experts = [_mlp(self.hidden_dims, f"expert_{e}") for e in range(num_experts)]
        self.gates = [tf.keras.layers.Dense(num_experts, activation="softmax", name=f"{task}_gate") for task in TASKS]

    def call(self, inputs):
        experts = tf.stack([expert(inputs) for expert in self.experts], axis=1)  # [B, E, H]
        return {task: tf.einsum("be,beh->bh", gate(inputs), experts) for task, gate in zip(TASKS, self.gates)}

    def get_config(self):
        return {**super().get_config(), "hidden_dims": self.hidden_dims, "num_experts": self.num_experts}


def build_trunk(kind: str, hidden_dims, num_experts: int = 4) -> tf.keras.layers.Layer:
    if kind == "shared_bottom":
        return SharedBottom(hidden_dims, name="trunk")
    if kind == "mmoe":
        return MMoE(hidden_dims, num_experts, name="trunk")
    raise ValueError(f"trunk must be one of {TRUNKS}, got {kind!r}")
