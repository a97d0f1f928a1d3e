"""RunInference model handler for the frozen RQ-VAE SavedModel: batches of embeddings -> SIDs."""

from typing import Any, Iterable, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from models.rqvae_savedmodel import INPUT_KEY, OUTPUT_ERROR, OUTPUT_SID, SIGNATURE


class SidModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """Loads the SavedModel once per worker process (RunInference shares it across threads).

    Args:
      model_path: one export version directory (local or any TF filesystem such as gs://).
      min_batch_size, max_batch_size: bounds for Beam's BatchElements in front of the model.
    """

    def __init__(self, model_path: str, min_batch_size: int = 1, max_batch_size: int = 4096):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self._model_path = model_path

    def load_model(self):
        import tensorflow as tf

        return tf.saved_model.load(self._model_path)

    def run_inference(self, batch: Sequence[np.ndarray], model, inference_args: Optional[dict] = None
                      ) -> Iterable[PredictionResult]:
        import tensorflow as tf

        embeddings = tf.constant(np.stack(batch).astype(np.float32, copy=False))
        out = model.signatures[SIGNATURE](**{INPUT_KEY: embeddings})
        # Own copies: results outlive the batch's tensors and cross threads in the runner.
        sids = np.array(out[OUTPUT_SID].numpy(), copy=True)
        errors = np.array(out[OUTPUT_ERROR].numpy(), copy=True)
        return [PredictionResult(e, {OUTPUT_SID: s, OUTPUT_ERROR: float(r)})
                for e, s, r in zip(batch, sids, errors)]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(e.nbytes for e in batch)

    def get_metrics_namespace(self) -> str:
        return "sidrec_rqvae"
