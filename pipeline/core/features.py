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

# Features the transform job joins onto the logs (from the SID table and the corpus).
WATCH_SID = "watch_sid"  # int64 [L]; -1 codes where the item has no SID
CANDIDATE_SID = "candidate_sid"
HISTORY_SIDS = "history_sids"  # int64 [H * L], the history items' SIDs one after another
WATCH_EMBEDDING = "watch_embedding"  # float32 [D] (dense representation only)
CANDIDATE_EMBEDDING = "candidate_embedding"
CANDIDATE_FIRST_DAY = "candidate_first_day"
# Serving requests of SID representations may carry content embeddings instead of SIDs (serving.cold_start):
# WATCH_EMBEDDING and CANDIDATE_EMBEDDING (float32 [D]) and the history's, one after another (float32 [H * D]).
HISTORY_EMBEDDINGS = "history_embeddings"

# Outputs of preprocessing_fn: what the ranker reads. Pieces index one shared item table.
WATCH_PIECES = "watch_pieces"
CANDIDATE_PIECES = "candidate_pieces"
HISTORY_PIECES = "history_pieces"  # the pieces of every history item (pooled in the model)
HISTORY_LENGTH = "history_length"  # history items, to turn the pooled sum into a mean
COLD_START = "cold_start"  # 1 if the candidate was first seen on the impression's day
USER_KEY = "user_key"  # int64 fingerprint of the user id: evaluation groups impressions by user (bootstrap)
USER_KEY_BUCKETS = 2 ** 62  # tf.strings.to_hash_bucket_fast(user_id, USER_KEY_BUCKETS): never negative
ITEM_AGE = "item_age"  # days since the candidate was first seen, on the impression's day (evaluation slices)
CANDIDATE_KEY = "candidate_key"  # int64 fingerprint of the candidate id, as USER_KEY (popularity slices)
LABEL_KEYS = (CLICK, ENGAGEMENT)
# Raw features only training and evaluation read (the cold-start flag, the user of the bootstrap); serving
# requests leave them out.
EVALUATION_KEYS = (DAY, CANDIDATE_FIRST_DAY, USER_ID)

# Serving: the input of every signature, and the named outputs of serving_default.
SERVING_INPUT = "examples"
CLICK_PROBABILITY = "click_probability"
ENGAGEMENT_PREDICTION = "engagement"

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
