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
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
