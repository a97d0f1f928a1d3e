"""The frozen RQ-VAE's SID path (encoder and codebooks) as a module another SavedModel can hold.

The ranker's export holds one, so a serving request can carry an item's content embedding instead
of its SID (serving.cold_start). It is rebuilt from the RQ-VAE export's own variables, and refused
unless their fingerprint is the one the export's card records: the tokenizer is the model that made
the SID table, not a retrained look-alike. It runs without XLA, so the stock TF Serving (whose CPU
XLA is off by default) serves it; on every item of the demo corpus its codes equal the XLA-compiled
export's.
"""

import os

import numpy as np

from models.rqvae import RQVAE
from models.rqvae_savedmodel import weights_fingerprint
from pipeline.core.cards import read_rqvae_card
from pipeline.core.tf_env import tf

VARIABLES = os.path.join("variables", "variables")


def load_frozen_rqvae(export_dir: str) -> tuple[RQVAE, dict]:
    """The Keras RQ-VAE of an export version, with its trained weights, and the export's card.

    Raises:
      ValueError: the export's variables do not fit its card's architecture, or their fingerprint is
        not the card's.
    """
    card = read_rqvae_card(export_dir)
    model = RQVAE(card["input_dim"], card["encoder_dims"], card["num_levels"], card["codebook_size"], card["beta"],
                  card["reset_interval"], card["seed"])
    model.build((None, card["input_dim"]))
    status = tf.train.Checkpoint(model=model).read(os.path.join(export_dir, VARIABLES))
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise ValueError(f"{export_dir}: its variables do not fit the RQ-VAE its card describes ({e})") from None
    status.expect_partial()  # the export also holds the serving module's own objects
    found = weights_fingerprint(model)
    if found != card["fingerprint"]:
        raise ValueError(f"{export_dir}: weights fingerprint {found[:12]} is not the card's {card['fingerprint'][:12]} "
                         f"(RQ-VAE {card['rqvae_version']}): the export was changed after it was written")
    return model, card


class SidTokenizer(tf.Module):
    """float32 [N, D] content embeddings -> int64 [N, L] SIDs, by the frozen RQ-VAE's encoder and codebooks.

    Holds only what the codes need (no decoder). `version` is the RQ-VAE version SID tables record.
    """

    def __init__(self, export_dir: str):
        super().__init__(name="sid_tokenizer")
        model, card = load_frozen_rqvae(export_dir)
        self.encoder, self.quantizer = model.encoder, model.quantizer
        self.version: str = card["rqvae_version"]
        self.input_dim: int = int(card["input_dim"])
        self.num_levels: int = int(card["num_levels"])
        self.codebook_size: int = int(card["codebook_size"])
        self.export_dir: str = export_dir
        # One graph function, traced once without autograph (the layers' Python loops unroll as they
        # are): every signature that calls it shares it, which keeps exports fast.
        self._codes = tf.function(self._forward, autograph=False, input_signature=[
            tf.TensorSpec([None, self.input_dim], tf.float32)])

    def _forward(self, embeddings: tf.Tensor) -> tf.Tensor:
        codes, _, _ = self.quantizer(self.encoder(embeddings))
        return tf.cast(codes, tf.int64)

    def __call__(self, embeddings: tf.Tensor) -> tf.Tensor:
        return self._codes(embeddings)

    def tokenize(self, embeddings: np.ndarray) -> np.ndarray:
        """Eager convenience: int64 [N, L] SIDs of float32 [N, D] embeddings."""
        return self(tf.constant(embeddings, tf.float32)).numpy()
