"""Raw serving tf.Examples: what the export's warm-up, the tests and the gRPC client send.

A request row is (watch item, candidate, history); the SIDs or embeddings the representation needs
are joined (from the SID table or the corpus, read by the caller) with the same code as the
transform job.
"""

import numpy as np
from pipeline.core.tf_env import tf

from pipeline.core import features as fk
from pipeline.sid.item_join import join_item_features
from pipeline.core.representation import RepresentationConfig

class ServingExampleBuilder:
    """Serializes (watch, candidate, history) rows as raw tf.Examples of one representation.

    Args:
      config: the representation the export was trained on.
      sids: {item_id: int64 [L]} (SID kinds); items missing get the OOV row, as in training.
      embeddings: {item_id: float32 [D]} (dense only).
    """

    def __init__(self, config: RepresentationConfig, sids: dict | None = None, embeddings: dict | None = None):
        self.config = config
        self._sids = sids or {}
        self._embeddings = embeddings or {}
        self.last_missing: dict[str, int] = {}

    def serialize(self, watch: list[str], candidate: list[str], histories: list[list[str]]) -> list[bytes]:
        """One serialized tf.Example per row; `last_missing` counts the items the join did not find."""
        if not len(watch) == len(candidate) == len(histories):
            raise ValueError(f"rows disagree: {len(watch)} watch, {len(candidate)} candidate, "
                             f"{len(histories)} histories")
        lengths = np.array([len(h) for h in histories], np.int64)
        joined = join_item_features(self.config, self._sids, self._embeddings, list(watch), list(candidate),
                                    [i for h in histories for i in h], lengths)
        self.last_missing = joined.missing
        split = {key: np.split(values, np.cumsum(counts)[:-1]) for key, (values, counts) in joined.columns.items()}
        records = []
        for row in range(len(watch)):
            feature = {fk.WATCH_ITEM_ID: _bytes([watch[row]]), fk.CANDIDATE_ITEM_ID: _bytes([candidate[row]]),
                       fk.HISTORY_ITEM_IDS: _bytes(histories[row])}
            for key, parts in split.items():
                values = parts[row]
                feature[key] = (tf.train.Feature(float_list=tf.train.FloatList(value=values))
                                if values.dtype == np.float32 else
                                tf.train.Feature(int64_list=tf.train.Int64List(value=values)))
            records.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        return records

    def rank_request(self, watch: str, candidates: list[str], history: list[str]) -> list[bytes]:
        """One user's request: the same watch item and history with every candidate."""
        return self.serialize([watch] * len(candidates), list(candidates), [list(history)] * len(candidates))


def _bytes(values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))
