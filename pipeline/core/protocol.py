"""The evaluation protocol: a training window of days 1..T, then evaluation days T+1..N.

Everything learned from data (TF Transform analyzers, the SentencePiece vocabulary, popularity
buckets) is learned on the training window only. The ranker trains on every day; from day T+1 on,
each day is first evaluated by the model that has not seen it (progressive validation), then
trained on. The headline is the mean over the evaluation days.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DaySplit:
    """The days of one data set, split at `eval_from` (the first evaluation day, T+1)."""

    days: tuple[int, ...]
    eval_from: int

    @property
    def train_window(self) -> list[int]:
        """Days 1..T: the only days anything is learned from besides the ranker's weights."""
        return [d for d in self.days if d < self.eval_from]

    @property
    def eval_days(self) -> list[int]:
        """Days T+1..N: each evaluated before the ranker trains on it."""
        return [d for d in self.days if d >= self.eval_from]


def default_eval_from(days: list[int]) -> int:
    """The first day of the second half (10 days: 6; 3 days: 2)."""
    return sorted(days)[len(days) // 2]


def split_days(days: list[int], eval_from: int = 0) -> DaySplit:
    """Splits the logged days; `eval_from` 0 means the default (the second half is evaluated).

    Raises:
      ValueError: fewer than two days, or an `eval_from` that leaves no training or no evaluation day.
    """
    days = sorted(days)
    if len(days) < 2:
        raise ValueError(f"need at least two logged days (a training window, then evaluation), found {days}")
    eval_from = eval_from or default_eval_from(days)
    if not days[0] < eval_from <= days[-1]:
        raise ValueError(f"eval_from {eval_from} must leave at least one training day and one evaluation "
                         f"day: the logs hold days {days[0]}..{days[-1]}, so pick {days[0] + 1}..{days[-1]}")
    return DaySplit(tuple(days), eval_from)


# Held-out rows for blessing a candidate (the daily step): per day, the users whose bucket of
# HOLDOUT_BUCKETS is below the per-mille asked for. The day moves the buckets, so a user held out
# one day is trained on the others. Works on numpy arrays and TensorFlow tensors alike (floor modulo).
HOLDOUT_BUCKETS = 1000
_HOLDOUT_DAY_STRIDE = 104_729


def held_out(user_key, day, per_mille: int):
    """True for the rows of `user_key` (the non-negative int64 user fingerprint) held out on `day`."""
    return (user_key + day * _HOLDOUT_DAY_STRIDE) % HOLDOUT_BUCKETS < per_mille


def held_out_users(user_ids, day: int, per_mille: int):
    """True for the rows of the users (ids: str or bytes) held out on `day`: their user key, as the transform
    graph computes it (features.USER_KEY), through `held_out`."""
    import numpy as np

    from pipeline.core import features as fk
    from pipeline.core.tf_env import tf

    keys = tf.strings.to_hash_bucket_fast(np.asarray(user_ids, dtype=object), fk.USER_KEY_BUCKETS).numpy()
    return held_out(keys, day, per_mille)
