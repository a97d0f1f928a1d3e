"""How an item becomes embedding-table pieces: the representations of the paper, as typed configs."""

import dataclasses

from pipeline.core.features import DEFAULT_MAX_HISTORY

KINDS = ("random_hash", "dense", "sid_ngram", "sid_spm")


def representation_name(kind: str, buckets: int = 8192, ngram: int = 1, vocab_size: int = 8192) -> str:
    """The name a representation's transform output and ranker runs go by (random_hash_8192, sid_2gram...)."""
    if kind == "random_hash":
        return f"random_hash_{buckets}"
    if kind == "sid_ngram":
        return f"sid_{ngram}gram"
    if kind == "sid_spm":
        return f"sid_spm_{vocab_size}"
    return kind


@dataclasses.dataclass(frozen=True)
class RepresentationConfig:
    """One item representation (DESIGN.md, "Item representations").

    random_hash: hash(item_id) mod `buckets`; one piece per item.
    dense: the raw content embedding of the watch item and the candidate; no table, no history.
    sid_ngram: L/N pieces, piece j = the codes of group j; group j owns rows [j K^N, (j+1) K^N).
    sid_spm: SentencePiece pieces of the SID string, `vocab_size` rows.
    SID representations add one out-of-vocabulary row (the last) for items without a SID.
    `max_history` is the log contract's H: longer histories are rejected in training and serving.
    """

    kind: str = "sid_ngram"
    buckets: int = 8192
    ngram: int = 1
    vocab_size: int = 8192
    num_levels: int = 4
    codebook_size: int = 256
    embedding_dim: int = 256
    max_history: int = DEFAULT_MAX_HISTORY

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "sid_ngram" and (self.ngram < 1 or self.num_levels % self.ngram):
            raise ValueError(f"ngram must divide the SID length L={self.num_levels}, got {self.ngram}")
        for name in ("buckets", "vocab_size", "num_levels", "codebook_size", "embedding_dim", "max_history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def name(self) -> str:
        return representation_name(self.kind, self.buckets, self.ngram, self.vocab_size)

    @property
    def groups(self) -> int:
        """N-gram pieces per item (L / N)."""
        return self.num_levels // self.ngram

    @property
    def table_rows(self) -> int:
        """Rows of the shared item table (0 for dense), including the OOV row of SID kinds."""
        if self.kind == "random_hash":
            return self.buckets
        if self.kind == "sid_ngram":
            return self.groups * self.codebook_size ** self.ngram + 1
        if self.kind == "sid_spm":
            return self.vocab_size + 1
        return 0

    @property
    def has_sids(self) -> bool:
        """True for the kinds whose pieces come from SIDs (they read the SID table)."""
        return self.kind in ("sid_ngram", "sid_spm")

    @property
    def oov_piece(self) -> int:
        return self.table_rows - 1

    def result_fields(self) -> dict:
        """The fields that change this representation's transform output (its fingerprint's part)."""
        used = {"random_hash": ("buckets",), "dense": ("embedding_dim",),
                "sid_ngram": ("ngram", "num_levels", "codebook_size"),
                "sid_spm": ("vocab_size", "num_levels", "codebook_size")}[self.kind]
        return {"kind": self.kind, "max_history": self.max_history, **{name: getattr(self, name) for name in used}}
