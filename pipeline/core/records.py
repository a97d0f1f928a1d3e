"""The in-memory records of the data contracts: a corpus, impression rows, a SID table."""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Corpus:
    """Items with their content embeddings; rows aligned across the arrays."""

    item_ids: np.ndarray  # object (str) [N]
    embeddings: np.ndarray  # float32 [N, D]
    first_day: np.ndarray  # int64 [N]
    titles: np.ndarray | None = None  # object (str) [N]

    def __post_init__(self):
        n = len(self.item_ids)
        if self.embeddings.ndim != 2 or len(self.embeddings) != n or len(self.first_day) != n:
            raise ValueError(f"corpus arrays disagree: {n} ids, embeddings {self.embeddings.shape}, "
                             f"{len(self.first_day)} first_day")

    @property
    def size(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]


@dataclasses.dataclass
class Impressions:
    """Impression rows; the history is ragged: flat values plus one length per row."""

    user_id: np.ndarray
    watch_item_id: np.ndarray
    candidate_item_id: np.ndarray
    history_values: np.ndarray
    history_lengths: np.ndarray
    click: np.ndarray
    engagement: np.ndarray
    day: np.ndarray
    true_ctr: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.day)

    def history(self, row: int) -> list[str]:
        start = int(self.history_lengths[:row].sum())
        return list(self.history_values[start:start + int(self.history_lengths[row])])

    def select(self, rows: np.ndarray) -> "Impressions":
        """The impressions where the boolean mask `rows` is true."""
        picked = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[rows])
                  for f in dataclasses.fields(self) if f.name != "history_values"}
        picked["history_values"] = self.history_values[np.repeat(rows, self.history_lengths)]
        return Impressions(**picked)

    def slice(self, start: int, stop: int) -> "Impressions":
        """Rows start..stop-1 (views, no copy)."""
        picked = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[start:stop])
                  for f in dataclasses.fields(self) if f.name != "history_values"}
        offsets = np.concatenate([[0], np.cumsum(self.history_lengths)])
        picked["history_values"] = self.history_values[offsets[start]:offsets[min(stop, self.size)]]
        return Impressions(**picked)

    @classmethod
    def concatenate(cls, parts: list["Impressions"]) -> "Impressions":
        if not parts:
            raise ValueError("no impressions to concatenate")
        merged = {}
        for field in dataclasses.fields(cls):
            values = [getattr(p, field.name) for p in parts]
            merged[field.name] = None if any(v is None for v in values) else np.concatenate(values)
        return cls(**merged)


@dataclasses.dataclass
class SidTable:
    """item_id -> SID (int64 [L]) from one RQ-VAE version."""

    item_ids: np.ndarray  # object (str) [N]
    sids: np.ndarray  # int64 [N, L]
    rqvae_version: str

    def lookup(self) -> dict[str, np.ndarray]:
        return dict(zip(self.item_ids, self.sids))
