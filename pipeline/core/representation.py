"""How an item becomes embedding-table pieces: the representations of the paper, as typed configs.

The representation kinds are named here and only here; other modules ask the config (`has_sids`,
`is_dense`, `uses_spm`, ...) or compare with `Kind` members.
"""

import dataclasses
import enum

from pipeline.core.features import DEFAULT_MAX_HISTORY


class Kind(enum.StrEnum):
    """The representation kinds (DESIGN.md, "Item representations"); their values are the CLI's names."""

    RANDOM_HASH = "random_hash"
    DENSE = "dense"
    SID_NGRAM = "sid_ngram"
    SID_SPM = "sid_spm"


KINDS = tuple(kind.value for kind in Kind)
# The flag value that sets each kind's size in `KIND:VALUE` arm specs (dense: the depth multiplier).
SIZE_FIELD = {Kind.RANDOM_HASH: "buckets", Kind.SID_NGRAM: "ngram", Kind.SID_SPM: "vocab_size"}


def parse_kind(text: str) -> Kind:
    """A kind from its name; ValueError listing the kinds otherwise."""
    if text not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {text!r}")
    return Kind(text)


def representation_name(kind: str, buckets: int = 8192, ngram: int = 1, vocab_size: int = 8192) -> str:
    """The name a representation's transform output and ranker runs go by (random_hash_8192, sid_2gram...)."""
    kind = parse_kind(kind)
    if kind is Kind.RANDOM_HASH:
        return f"random_hash_{buckets}"
    if kind is Kind.SID_NGRAM:
        return f"sid_{ngram}gram"
    if kind is Kind.SID_SPM:
        return f"sid_spm_{vocab_size}"
    return kind.value


# The representation `sidrec train`, `sidrec predict` and the demo default to.
DEFAULT_SERVED = representation_name(Kind.SID_SPM, vocab_size=8192)


def is_dense_name(representation: str) -> bool:
    """True for the dense representation's name (it has no table, and never reads the history)."""
    return representation == Kind.DENSE.value


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

    kind: Kind = Kind.SID_NGRAM
    buckets: int = 8192
    ngram: int = 1
    vocab_size: int = 8192
    num_levels: int = 4
    codebook_size: int = 256
    embedding_dim: int = 256
    max_history: int = DEFAULT_MAX_HISTORY

    def __post_init__(self):
        object.__setattr__(self, "kind", parse_kind(self.kind))
        if self.kind is Kind.SID_NGRAM and (self.ngram < 1 or self.num_levels % self.ngram):
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
        if self.kind is Kind.RANDOM_HASH:
            return self.buckets
        if self.kind is Kind.SID_NGRAM:
            return self.groups * self.codebook_size ** self.ngram + 1
        if self.kind is Kind.SID_SPM:
            return self.vocab_size + 1
        return 0

    @property
    def has_sids(self) -> bool:
        """True for the kinds whose pieces come from SIDs (they read the SID table)."""
        return self.kind in (Kind.SID_NGRAM, Kind.SID_SPM)

    @property
    def is_dense(self) -> bool:
        """The dense baseline: the raw content embedding, no table, no history."""
        return self.kind is Kind.DENSE

    @property
    def uses_spm(self) -> bool:
        """SentencePiece pieces: the job learns a vocabulary, and graphs hold SentencePiece ops."""
        return self.kind is Kind.SID_SPM

    @property
    def is_ngram(self) -> bool:
        return self.kind is Kind.SID_NGRAM

    @property
    def is_random_hash(self) -> bool:
        return self.kind is Kind.RANDOM_HASH

    def card(self) -> dict:
        """The config as plain JSON values (the transform card's "config"; RepresentationConfig(**card) reads it)."""
        return {**dataclasses.asdict(self), "kind": self.kind.value}

    @property
    def oov_piece(self) -> int:
        return self.table_rows - 1

    def result_fields(self) -> dict:
        """The fields that change this representation's transform output (its fingerprint's part)."""
        used = {Kind.RANDOM_HASH: ("buckets",), Kind.DENSE: ("embedding_dim",),
                Kind.SID_NGRAM: ("ngram", "num_levels", "codebook_size"),
                Kind.SID_SPM: ("vocab_size", "num_levels", "codebook_size")}[self.kind]
        return {"kind": self.kind.value, "max_history": self.max_history, **{name: getattr(self, name) for name in used}}
