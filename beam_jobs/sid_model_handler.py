"""RunInference model handler for the frozen RQ-VAE SavedModel, on chunks of items.

The unit of work is a `Chunk` (a few thousand rows as arrays), so Beam's per-element cost is paid
once per chunk rather than once per item; RunInference still batches chunks and shares the model.
"""

from typing import Any, Iterable, NamedTuple, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from models.rqvae_savedmodel import INPUT_KEY, OUTPUT_SID, SIGNATURE


class Chunk(NamedTuple):
    """Rows of the corpus as arrays: ids, first days and float32 [n, D] embeddings."""

    item_ids: np.ndarray
    first_day: np.ndarray
    embeddings: np.ndarray

    @property
    def size(self) -> int:
        return len(self.item_ids)


class SidModelHandler(ModelHandler[Chunk, PredictionResult, Any]):
    """Loads the SavedModel once per worker process (RunInference shares it across threads).

    Args:
      model_path: one export version directory (local or any TF filesystem such as gs://).
      max_chunks_per_call: chunks concatenated into one model call.
    """

    def __init__(self, model_path: str, max_chunks_per_call: int = 2):
        # BatchElements with a minimum above 1 corrupted elements under the multi-threaded
        # DirectRunner of Beam 2.77 (seen here), so batches start at one chunk.
        super().__init__(min_batch_size=1, max_batch_size=max_chunks_per_call)
        self._model_path = model_path

    def load_model(self):
        from pipeline.core.tf_env import tf

        return tf.saved_model.load(self._model_path)

    def run_inference(self, batch: Sequence[Chunk], model, inference_args: Optional[dict] = None
                      ) -> Iterable[PredictionResult]:
        from pipeline.core.tf_env import tf

        embeddings = np.concatenate([chunk.embeddings for chunk in batch]).astype(np.float32, copy=False)
        sids = model.signatures[SIGNATURE](**{INPUT_KEY: tf.constant(embeddings)})[OUTPUT_SID].numpy()
        ends = np.cumsum([chunk.size for chunk in batch])
        return [PredictionResult(chunk, part) for chunk, part in zip(batch, np.split(sids, ends[:-1]))]

    def get_num_bytes(self, batch: Sequence[Chunk]) -> int:
        return sum(chunk.embeddings.nbytes for chunk in batch)

    def get_metrics_namespace(self) -> str:
        return "sidrec_rqvae"
