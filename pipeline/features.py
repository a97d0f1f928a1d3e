"""Feature keys and field specs of every data contract: each name is typed here and only here."""

import dataclasses
import enum

# Corpus: one row per item.
ITEM_ID = "item_id"
EMBEDDING = "embedding"
FIRST_DAY = "first_day"
TITLE = "title"

# Impression logs: one row per (user, watch item, candidate) impression.
USER_ID = "user_id"
WATCH_ITEM_ID = "watch_item_id"
CANDIDATE_ITEM_ID = "candidate_item_id"
HISTORY_ITEM_IDS = "history_item_ids"
CLICK = "click"
ENGAGEMENT = "engagement"
DAY = "day"
# Simulator ground truth (the true click probability). Optional, and never a model input.
TRUE_CTR = "true_ctr"

# SID table: one row per item.
SID = "sid"
RQVAE_VERSION = "rqvae_version"

DEFAULT_MAX_HISTORY = 20


class Kind(enum.Enum):
    """What one field holds; the contract readers check columns against it."""

    STRING = "string"
    INT = "int"
    FLOAT = "float"
    STRING_LIST = "list of strings"
    INT_LIST = "list of ints"
    FLOAT_LIST = "list of floats"


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    required: bool = True


def _fields(*fields: Field) -> dict[str, Field]:
    return {f.name: f for f in fields}


CORPUS_FIELDS = _fields(
    Field(ITEM_ID, Kind.STRING),
    Field(EMBEDDING, Kind.FLOAT_LIST),
    Field(FIRST_DAY, Kind.INT),
    Field(TITLE, Kind.STRING, required=False),
)

LOG_FIELDS = _fields(
    Field(USER_ID, Kind.STRING),
    Field(WATCH_ITEM_ID, Kind.STRING),
    Field(CANDIDATE_ITEM_ID, Kind.STRING),
    Field(HISTORY_ITEM_IDS, Kind.STRING_LIST),
    Field(CLICK, Kind.INT),
    Field(ENGAGEMENT, Kind.FLOAT),
    Field(DAY, Kind.INT),
    Field(TRUE_CTR, Kind.FLOAT, required=False),
)

SID_FIELDS = _fields(
    Field(ITEM_ID, Kind.STRING),
    Field(SID, Kind.INT_LIST),
    Field(RQVAE_VERSION, Kind.STRING),
)
