"""The rules that turn a flat interactions table into the log contract (`sidrec import`, beam_jobs/import_interactions.py).

One row per shown or consumed item: user, item, time, and a click (or a rating with a threshold), maybe
an engagement. Stated rules:
  - Time is epoch seconds, epoch milliseconds or ISO-8601 (`--time_format`; "auto" takes numbers
    above 1e11 as milliseconds). Rows are ordered by (time, user, item), with user and item as read
    (numbers compare as numbers). That tie rule is the global order and the order within a user.
  - Days (log partitions): `equal` splits the rows, in that order, into --num_steps steps of equal
    count; `rows` makes a step every --rows_per_step rows; `calendar` makes a step every --step_days
    calendar days in --timezone, counted from the first day. More than MAX_STEPS steps are refused.
  - Per user, in order, each row is an impression of its item. The watch item is the user's previous
    *consumed* item, and the history is their earlier consumed items, most recent first, cut to H.
    Consumed means clicked (`--consumed click`) or any interaction (`--consumed any`, as MovieLens
    ratings are). A row whose user has consumed nothing before has no watch item and is written aside.
    Impressions that were not clicked stay as negatives.
  - click = the click column (0/1), or rating >= --click_threshold. engagement = the engagement
    column in [0, 1]; else rating / --rating_max; else the click.
"""

import dataclasses
import datetime
import math
import os
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.core import features as fk
from pipeline.core.config_flags import flag

MAX_STEPS = 100
ROLES = ("user", "item", "time", "click", "rating", "engagement")
TIME_FORMATS = ("auto", "s", "ms", "iso")
DAY_MODES = ("equal", "rows", "calendar")
CONSUMED = ("click", "any")
_MS_ABOVE = 1e11  # epoch seconds reach 1e11 in the year 5138


def parse_roles(text: str, flag: str, roles: tuple[str, ...], required: tuple[str, ...]) -> dict[str, str]:
    """"ROLE=COLUMN,..." -> {role: source column}.

    Raises:
      ValueError: naming `flag`: an unknown role, a role given twice, or a required one missing.
    """
    mapping = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        role, _, column = part.partition("=")
        if role not in roles or not column:
            raise ValueError(f"{flag}: {part!r} is not ROLE=COLUMN with ROLE one of {', '.join(roles)}")
        if role in mapping:
            raise ValueError(f"{flag}: {role} is given twice")
        mapping[role] = column
    missing = [r for r in required if r not in mapping]
    if missing:
        raise ValueError(f"{flag} needs {', '.join(required)}; missing: {', '.join(missing)}")
    return mapping


def parse_columns(text: str) -> dict[str, str]:
    """"user=uid,item=vid,time=ts,click=clicked" -> {role: source column}.

    Raises:
      ValueError: an unknown role, a role given twice, or user, item, time or a click/rating missing.
    """
    mapping = parse_roles(text, "--columns", ROLES, ())
    missing = [r for r in ("user", "item", "time") if r not in mapping]
    if missing or not ({"click", "rating"} & set(mapping)):
        raise ValueError(f"--columns needs user, item, time and click or rating; missing: "
                         f"{', '.join(missing + ([] if {'click', 'rating'} & set(mapping) else ['click or rating']))}")
    return mapping


def sort_key(value):
    """A value as read, ordered as it reads: numbers as numbers, text as text (numbers first)."""
    return (0, float(value), "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0.0, str(value))


def to_seconds(value, time_format: str) -> float:
    """Epoch seconds of a time value.

    Raises:
      ValueError: a value that is not a time of that format (the message says what was expected).
    """
    if time_format not in TIME_FORMATS:
        raise ValueError(f"time format must be one of {TIME_FORMATS}, got {time_format!r}")
    if time_format == "iso" or (time_format == "auto" and isinstance(value, str) and not _is_number(value)):
        try:
            parsed = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"expected an ISO-8601 time, got {value!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.timezone.utc)
        return parsed.timestamp()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected epoch {'milliseconds' if time_format == 'ms' else 'seconds'}, got {value!r}") \
            from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite time, got {value!r}")
    return number / 1000.0 if time_format == "ms" or (time_format == "auto" and abs(number) >= _MS_ABOVE) else number


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class Steps:
    """How rows become days."""

    mode: str = "equal"
    num_steps: int = 15
    rows_per_step: int = 0
    step_days: int = 1
    timezone: str = "UTC"

    def __post_init__(self):
        if self.mode not in DAY_MODES:
            raise ValueError(f"--day_mode must be one of {', '.join(DAY_MODES)}, got {self.mode!r}")
        if self.mode == "equal" and self.num_steps < 2:
            raise ValueError(f"--num_steps must be >= 2 (a training window, then evaluation), got {self.num_steps}")
        if self.mode == "rows" and self.rows_per_step < 1:
            raise ValueError(f"--day_mode rows needs --rows_per_step >= 1, got {self.rows_per_step}")
        if self.mode == "calendar" and self.step_days < 1:
            raise ValueError(f"--step_days must be >= 1, got {self.step_days}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"--timezone {self.timezone!r} is not a time zone name (UTC, Europe/Paris, ...)") from None

    def of_rank(self, rank: int, total: int) -> int:
        """The step (>= 1) of the row at `rank` of `total` in the global order (equal and rows modes)."""
        return rank * self.num_steps // total + 1 if self.mode == "equal" else rank // self.rows_per_step + 1

    def local_day(self, seconds: float) -> int:
        """The calendar day number (days since 1970-01-01) in the time zone."""
        moment = datetime.datetime.fromtimestamp(seconds, tz=ZoneInfo(self.timezone))
        return moment.date().toordinal()

    def of_day(self, local_day: int, first_local_day: int) -> int:
        """The step (>= 1) of a calendar day, counted from the first (calendar mode)."""
        return (local_day - first_local_day) // self.step_days + 1

    def check_count(self, steps: int, rows: int) -> None:
        """Raises ValueError when the steps are more than MAX_STEPS (one `model.fit` each)."""
        if steps > MAX_STEPS:
            choice = {"rows": f"--rows_per_step {self.rows_per_step}", "calendar": f"--step_days {self.step_days}",
                      "equal": f"--num_steps {self.num_steps}"}[self.mode]
            raise ValueError(f"{choice} gives {steps:,} log partitions of about {rows // steps:,} rows each, and "
                             f"`sidrec train` fits once per partition; use at most {MAX_STEPS}")


@dataclasses.dataclass(frozen=True)
class Interaction:
    """One valid row, as the per-user rule reads it."""

    time: float
    user_key: tuple
    item_key: tuple
    user_id: str
    item_id: str
    click: int
    engagement: float
    step: int
    source: str
    row: int


def user_rows(rows: list[Interaction], consumed: str, max_history: int, has_embedding) -> tuple[list, list]:
    """One user's rows -> (impressions, rejections).

    Impressions are dicts of the log contract's fields (history most recent first); rejections are
    (interaction, field, reason). `has_embedding(item_id)` says whether the corpus has the item.
    """
    taken, impressions, rejected = [], [], []
    for row in sorted(rows, key=lambda r: (r.time, r.item_key, r.source, r.row)):
        if not has_embedding(row.item_id):
            rejected.append((row, "item", "no content embedding for this item in the corpus"))
        elif not taken:
            rejected.append((row, "watch_item_id", "the user's first consumed item is not there yet: no watch item"))
        else:
            impressions.append({"user_id": row.user_id, "watch_item_id": taken[-1], "candidate_item_id": row.item_id,
                                "history_item_ids": taken[::-1][:max_history], "click": row.click,
                                "engagement": row.engagement, "day": row.step})
        if consumed == "any" or row.click == 1:
            taken.append(row.item_id)
    return impressions, rejected


# ---- the import job's config (beam_jobs/import_interactions.py): its flags are the rules above
FORMATS = ("auto", "csv", "parquet", "jsonl")


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    interactions: str = flag("", "interactions table: a file or a glob of CSV, Parquet or JSON-lines files")
    columns: str = flag("", "ROLE=COLUMN,...: user, item, time and click or rating; engagement optional")
    output: str = flag("", "data directory written (corpus.parquet, logs/, rejects/, summary.json), replaced whole")
    format: str = flag("auto", "csv, parquet or jsonl (auto: by the file name)")
    delimiter: str = flag(",", "CSV delimiter (\\t for tabs)")
    header: bool = flag(True, "CSV files start with a header line")
    csv_columns: str = flag("", "comma-separated column names of CSV files without a header")
    time_format: str = flag("auto", "s, ms or iso (auto: numbers >= 1e11 are milliseconds, text is ISO-8601)")
    click_threshold: float = flag(0.0, "with a rating column: a rating at or above this is a click")
    rating_max: float = flag(0.0, "with a rating column and no engagement column: engagement = rating / this "
                                  "(0: engagement = the click)")
    consumed: str = flag("click", "what becomes the next watch item and enters the history: a clicked item "
                                  "(click) or any interaction (any)")
    max_history: int = flag(fk.DEFAULT_MAX_HISTORY, "history length cap H (longer histories are cut to the H "
                                                    "most recent)")
    day_mode: str = flag("calendar", "equal (--num_steps steps of equal count), rows (a step every --rows_per_step "
                                     "rows) or calendar (a step every --step_days days in --timezone)")
    num_steps: int = flag(15, "equal: the number of steps")
    rows_per_step: int = flag(0, "rows: rows per step")
    step_days: int = flag(1, "calendar: days per step")
    timezone: str = flag("UTC", "calendar: the time zone whose midnight starts a day")
    items: str = flag("", "item table (Parquet) with an id and an embedding column (see --item_columns)")
    item_columns: str = flag("item=item_id,embedding=embedding", "ROLE=COLUMN of --items: item, embedding, and "
                                                                  "optionally first_day, title")
    item_ids: str = flag("", "instead of --items: a text file of item ids, one a line ...")
    embeddings: str = flag("", "... and a .npy matrix of their embeddings, one row a line")
    titles: str = flag("", "optional CSV of titles for --item_ids (see --title_columns)")
    title_columns: str = flag("item=item_id,title=title", "ROLE=COLUMN of --titles")
    shards_per_day: int = flag(4, "TFRecord files per day (the transform job reads a day's files in parallel)")

    def __post_init__(self):
        for name in ("interactions", "columns", "output"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        parse_columns(self.columns)
        self.item_roles(), self.title_roles()
        self.steps()  # checks the day rule's flags
        if self.format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.consumed not in CONSUMED:
            raise ValueError(f"--consumed must be click or any, got {self.consumed!r}")
        if bool(self.items) == bool(self.item_ids and self.embeddings):
            raise ValueError("give the items as --items (Parquet) or as --item_ids and --embeddings, one of the two")
        if self.time_format not in TIME_FORMATS:
            raise ValueError(f"--time_format must be one of {', '.join(TIME_FORMATS)}")
        if self.shards_per_day < 1 or self.max_history < 1:
            raise ValueError("--shards_per_day and --max_history must be >= 1")

    def steps(self) -> Steps:
        return Steps(self.day_mode, self.num_steps, self.rows_per_step, self.step_days, self.timezone)

    def item_roles(self) -> dict[str, str]:
        return parse_roles(self.item_columns, "--item_columns", ("item", "embedding", "first_day", "title"),
                                 ("item", "embedding"))

    def title_roles(self) -> dict[str, str]:
        return parse_roles(self.title_columns, "--title_columns", ("item", "title"), ("item", "title"))


# ---- the MovieLens preset's config (`sidrec movielens`: the import job on ml-latest-small's files)
ENV_VAR = "SIDREC_MOVIELENS_DIR"


_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_SHARED_COPY = os.path.join(_REPO_ROOT, "..", "shared", "data", "movielens-latest-small")


def default_dir() -> str:
    """$SIDREC_MOVIELENS_DIR if set, else ../shared/data/movielens-latest-small beside the repo."""
    return _absolute(os.environ.get(ENV_VAR, _SHARED_COPY))


@dataclasses.dataclass(frozen=True)
class MovieLensConfig:
    data_dir: str = flag("", f"the MovieLens files (default: ${ENV_VAR}, else ../shared/data/...)")
    num_steps: int = flag(15, "time steps (log partitions): the ratings, in time order, split into this many "
                              "steps of equal size (the default way to step)")
    step_days: int = flag(0, "if > 0, one step per this many calendar days instead (ml-latest-small spans "
                             "22 years: 7 gives over 1,000 steps and is refused)")
    ratings_per_step: int = flag(0, "if > 0, step by this many ratings (in time order) instead")
    click_threshold: float = flag(4.0, "a rating at or above this is a click")
    max_history: int = flag(fk.DEFAULT_MAX_HISTORY, "history length cap H")

    def __post_init__(self):
        if self.num_steps < 2:
            raise ValueError(f"num_steps must be >= 2 (a training window, then evaluation), got {self.num_steps}")
        if self.step_days < 0 or self.ratings_per_step < 0:
            raise ValueError(f"step_days and ratings_per_step must be >= 0, got {self.step_days}, "
                             f"{self.ratings_per_step}")
        if self.step_days and self.ratings_per_step:
            raise ValueError("give step_days or ratings_per_step, not both")
        if self.max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {self.max_history}")

    @property
    def resolved_dir(self) -> str:
        return _absolute(self.data_dir) if self.data_dir else default_dir()


def _absolute(path: str) -> str:
    """A local path made absolute (pipeline.core.publish.absolute_path, without TensorFlow); URLs as given."""
    return path if "://" in path else os.path.abspath(path)
