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
    SID_PREFIX = "sid_prefix"


SID_KINDS = (Kind.SID_NGRAM, Kind.SID_SPM, Kind.SID_PREFIX)
# A SID kind with this suffix is the hybrid: its pieces plus one random-hash ID piece of a small ID table.
HYBRID_SUFFIX = "+id"
KINDS = tuple(kind.value for kind in Kind) + tuple(kind.value + HYBRID_SUFFIX for kind in SID_KINDS)
# The flag value that sets each kind's size in `KIND:VALUE` arm specs (dense: the depth multiplier).
SIZE_FIELD = {Kind.RANDOM_HASH: "buckets", Kind.SID_NGRAM: "ngram", Kind.SID_SPM: "vocab_size",
              Kind.SID_PREFIX: "buckets"}


def split_kind(text: str) -> tuple[Kind, bool]:
    """A kind name -> (the kind, whether it is the hybrid `KIND+id`); ValueError listing the kinds otherwise."""
    if text not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {text!r}")
    hybrid = text.endswith(HYBRID_SUFFIX)
    return Kind(text.removesuffix(HYBRID_SUFFIX)), hybrid


def parse_kind(text: str) -> Kind:
    """A kind from its name (a hybrid's: its SID kind); ValueError listing the kinds otherwise."""
    return split_kind(text)[0]


def representation_name(kind: str, buckets: int = 8192, ngram: int = 1, vocab_size: int = 8192,
                        prefix_lengths: tuple[int, ...] = (), id_buckets: int = 0) -> str:
    """The name a representation's transform output and ranker runs go by (random_hash_8192, sid_2gram,
    sid_prefix_8192, sid_spm_8192+id_1024...). `id_buckets` counts for a hybrid kind (`KIND+id`) only."""
    kind, hybrid = split_kind(kind.value if isinstance(kind, Kind) else kind)
    if kind is Kind.RANDOM_HASH:
        name = f"random_hash_{buckets}"
    elif kind is Kind.SID_NGRAM:
        name = f"sid_{ngram}gram"
    elif kind is Kind.SID_SPM:
        name = f"sid_spm_{vocab_size}"
    elif kind is Kind.SID_PREFIX:
        name = f"sid_prefix_{buckets}" + (f"_l{''.join(map(str, prefix_lengths))}" if prefix_lengths else "")
    else:
        name = kind.value
    return name + (f"{HYBRID_SUFFIX}_{id_buckets}" if hybrid else "")


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
    sid_prefix: one piece per prefix length in `prefix_lengths` (default 1..L), a fingerprint of the
      length and the prefix's codes hashed into `buckets` rows (Zheng et al., 2025).
    SID representations add one out-of-vocabulary row (the last of theirs) for items without a SID.
    `id_buckets` > 0 makes the hybrid `KIND+id`: every item also looks up the row hash(item_id) mod
    `id_buckets` of an ID table after the SID rows, summed with its SID pieces.
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
    prefix_lengths: tuple[int, ...] = ()
    id_buckets: int = 0

    def __post_init__(self):
        object.__setattr__(self, "kind", parse_kind(self.kind))
        object.__setattr__(self, "prefix_lengths", tuple(int(n) for n in self.prefix_lengths))
        if self.kind is Kind.SID_NGRAM and (self.ngram < 1 or self.num_levels % self.ngram):
            raise ValueError(f"ngram must divide the SID length L={self.num_levels}, got {self.ngram}")
        for name in ("buckets", "vocab_size", "num_levels", "codebook_size", "embedding_dim", "max_history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        lengths = self.prefix_lengths
        if lengths and (list(lengths) != sorted(set(lengths)) or lengths[0] < 1 or lengths[-1] > self.num_levels):
            raise ValueError(f"prefix_lengths must be increasing lengths in 1..L={self.num_levels}, got {lengths}")
        if self.id_buckets < 0 or (self.id_buckets and not self.has_sids):
            raise ValueError(f"id_buckets (the hybrid's ID table) needs a SID kind and >= 1 rows, got "
                             f"{self.id_buckets} for {self.kind.value}")

    @property
    def is_hybrid(self) -> bool:
        """SID pieces plus one random-hash ID piece (`KIND+id`)."""
        return self.id_buckets > 0

    @property
    def kind_name(self) -> str:
        """The kind as the CLI names it (with `+id` for a hybrid)."""
        return self.kind.value + (HYBRID_SUFFIX if self.is_hybrid else "")

    @property
    def name(self) -> str:
        return representation_name(self.kind_name, self.buckets, self.ngram, self.vocab_size, self.prefix_lengths,
                                   self.id_buckets)

    @property
    def groups(self) -> int:
        """N-gram pieces per item (L / N)."""
        return self.num_levels // self.ngram

    @property
    def lengths(self) -> tuple[int, ...]:
        """sid_prefix: the prefix lengths that make an item's pieces."""
        return self.prefix_lengths or tuple(range(1, self.num_levels + 1))

    @property
    def sid_rows(self) -> int:
        """Rows of the SID pieces (the whole table unless hybrid), including the OOV row of SID kinds."""
        if self.kind is Kind.RANDOM_HASH:
            return self.buckets
        if self.kind is Kind.SID_NGRAM:
            return self.groups * self.codebook_size ** self.ngram + 1
        if self.kind is Kind.SID_SPM:
            return self.vocab_size + 1
        if self.kind is Kind.SID_PREFIX:
            return self.buckets + 1
        return 0

    @property
    def table_rows(self) -> int:
        """Rows of the shared item table (0 for dense): the SID rows, then the hybrid's ID rows."""
        return self.sid_rows + self.id_buckets

    @property
    def has_sids(self) -> bool:
        """True for the kinds whose pieces come from SIDs (they read the SID table)."""
        return self.kind in SID_KINDS

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
    def is_prefix(self) -> bool:
        return self.kind is Kind.SID_PREFIX

    @property
    def is_random_hash(self) -> bool:
        return self.kind is Kind.RANDOM_HASH

    def card(self) -> dict:
        """The config as plain JSON values (the transform card's "config"; RepresentationConfig(**card) reads it)."""
        return {**dataclasses.asdict(self), "kind": self.kind.value, "prefix_lengths": list(self.prefix_lengths)}

    @property
    def oov_piece(self) -> int:
        """The row of items without a SID: the last of the SID rows."""
        return self.sid_rows - 1

    def result_fields(self) -> dict:
        """The fields that change this representation's transform output (its fingerprint's part)."""
        used = {Kind.RANDOM_HASH: ("buckets",), Kind.DENSE: ("embedding_dim",),
                Kind.SID_NGRAM: ("ngram", "num_levels", "codebook_size"),
                Kind.SID_SPM: ("vocab_size", "num_levels", "codebook_size"),
                Kind.SID_PREFIX: ("buckets", "num_levels", "codebook_size")}[self.kind]
        fields = {"kind": self.kind.value, "max_history": self.max_history, **{name: getattr(self, name) for name in used}}
        if self.is_prefix:
            fields["prefix_lengths"] = list(self.lengths)
        if self.is_hybrid:
            fields["id_buckets"] = self.id_buckets
        return fields
