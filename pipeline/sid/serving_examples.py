"""Raw serving tf.Examples: what the export's warm-up, the tests and the gRPC client send.

A request row is (watch item, candidate, history); the SIDs or embeddings the representation needs
are joined (from the SID table or the corpus, read by the caller) with the same code as the
transform job. For a SID representation, an item missing from the SID table (one that arrived after
the last materialisation) is sent with its content embedding when the caller has one, and the
export computes its SID (serving.cold_start).
"""

import numpy as np
from pipeline.core.tf_env import tf

from pipeline.core import features as fk
from pipeline.sid.item_join import ItemIndex, join_item_features
from pipeline.core.representation import RepresentationConfig

class ServingExampleBuilder:
    """Serializes (watch, candidate, history) rows as raw tf.Examples of one representation.

    Args:
      config: the representation the export was trained on.
      sids: {item_id: int64 [L]} (SID kinds); items missing get the OOV row, as in training, unless
        `embeddings` has them.
      embeddings: {item_id: float32 [D]}: dense, every item's; SID kinds, those of items without a SID.

    After `serialize`: `last_missing` counts, per feature, the items served the OOV row (neither a SID
    nor, where it would be sent, an embedding); `last_embedded` lists the items sent as content
    embeddings instead of SIDs.
    """

    def __init__(self, config: RepresentationConfig, sids: dict | None = None, embeddings: dict | None = None):
        self.config = config
        self._sids = sids or {}
        self._embeddings = embeddings or {}
        for item_id, vector in self._embeddings.items():
            if np.shape(vector) != (config.embedding_dim,):
                raise ValueError(f"embedding of item {item_id!r}: expected {config.embedding_dim} values (the D "
                                 f"{config.name} was trained with), got shape {np.shape(vector)}")
        self._index = ItemIndex(config, self._sids, self._embeddings)
        self.last_missing: dict[str, int] = {}
        self.last_embedded: list[str] = []

    def serialize(self, watch: list[str], candidate: list[str], histories: list[list[str]]) -> list[bytes]:
        """One serialized tf.Example per row (see the class for what it counts)."""
        if not len(watch) == len(candidate) == len(histories):
            raise ValueError(f"rows disagree: {len(watch)} watch, {len(candidate)} candidate, "
                             f"{len(histories)} histories")
        lengths = np.array([len(h) for h in histories], np.int64)
        joined = join_item_features(self.config, self._index, list(watch), list(candidate),
                                    [i for h in histories for i in h], lengths)
        self.last_missing = joined.missing
        embedded: dict[str, None] = {}
        split = {key: np.split(values, np.cumsum(counts)[:-1]) for key, (values, counts) in joined.columns.items()}
        records = []
        for row in range(len(watch)):
            feature = {fk.WATCH_ITEM_ID: _bytes([watch[row]]), fk.CANDIDATE_ITEM_ID: _bytes([candidate[row]]),
                       fk.HISTORY_ITEM_IDS: _bytes(histories[row])}
            columns = {key: parts[row] for key, parts in split.items()}
            if self.config.has_sids:
                for key, items in ((fk.WATCH_EMBEDDING, [watch[row]]), (fk.CANDIDATE_EMBEDDING, [candidate[row]]),
                                   (fk.HISTORY_EMBEDDINGS, histories[row])):
                    values = self._embeddings_of_items_without_sids(items, embedded)
                    if values is not None:
                        columns[key] = values
            for key, values in columns.items():
                feature[key] = (tf.train.Feature(float_list=tf.train.FloatList(value=values))
                                if values.dtype == np.float32 else
                                tf.train.Feature(int64_list=tf.train.Int64List(value=values)))
            records.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        self.last_embedded = list(embedded)
        if self.config.has_sids and embedded:  # the SID join's misses less the items sent as embeddings
            self.last_missing = {key: sum(i not in self._sids and i not in self._embeddings for i in items)
                                 for key, items in ((fk.WATCH_SID, watch), (fk.CANDIDATE_SID, candidate),
                                                    (fk.HISTORY_SIDS, [i for h in histories for i in h]))}
        return records

    def _embeddings_of_items_without_sids(self, items: list[str], embedded: dict) -> np.ndarray | None:
        """The items' embeddings one after another, zeros ("none") for items with a SID or without an
        embedding; None when no item needs one (the feature is left out)."""
        needed = [item not in self._sids and item in self._embeddings for item in items]
        if not any(needed):
            return None
        embedded.update((item, None) for item, need in zip(items, needed) if need)
        zeros = np.zeros(self.config.embedding_dim, np.float32)
        return np.concatenate([np.asarray(self._embeddings[item], np.float32) if need else zeros
                               for item, need in zip(items, needed)])

    def rank_request(self, watch: str, candidates: list[str], history: list[str]) -> list[bytes]:
        """One user's request: the same watch item and history with every candidate."""
        return self.serialize([watch] * len(candidates), list(candidates), [list(history)] * len(candidates))


def _bytes(values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))
