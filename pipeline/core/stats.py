"""95% confidence intervals for the experiment's table: over seeds, and for paired differences.

A mean over n seeds gets Student's t interval (n - 1 degrees of freedom). A difference against the
baseline is paired: each seed's arm is compared with the baseline trained with the same seed on
the same days, and the interval is that of the per-seed differences. One seed gives no interval.
"""

import dataclasses
import math

import numpy as np

# Student's t, two-sided 95% (the 0.975 quantile), by degrees of freedom; beyond the table, 1.96.
_T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
          10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_975(degrees_of_freedom: int) -> float:
    """The 0.975 quantile of Student's t; between table entries, the one for fewer degrees (wider, safe)."""
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {degrees_of_freedom}")
    known = [d for d in _T_975 if d <= degrees_of_freedom]
    return _T_975[max(known)] if degrees_of_freedom <= 120 else 1.960


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean and its 95% interval over n values (low = high = NaN when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def significant(self) -> bool:
        """For a difference: the interval excludes 0 (one value is never significant)."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci95_low": self.low, "ci95_high": self.high, "n": self.n}


def mean_interval(values) -> Interval:
    """The mean of `values` with Student's t 95% interval (NaN values are refused: a seed is missing)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"an interval needs finite values, got {values.tolist()}")
    mean = float(values.mean())
    if values.size < 2:
        return Interval(mean, math.nan, math.nan, int(values.size))
    half = t_975(values.size - 1) * float(values.std(ddof=1)) / math.sqrt(values.size)
    return Interval(mean, mean - half, mean + half, int(values.size))


def paired_change(arm, baseline) -> Interval:
    """The % change of `arm` against `baseline`, paired by position (the same seed), with its interval."""
    arm, baseline = np.asarray(arm, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if arm.shape != baseline.shape:
        raise ValueError(f"paired values disagree in number: {arm.size} against {baseline.size}")
    return mean_interval(100.0 * (arm / baseline - 1.0))


def interval(values) -> dict:
    """mean_interval as a dict ({mean, ci95_low, ci95_high, n}); NaN throughout when a value is NaN (a day
    without cold-start impressions)."""
    if np.isfinite(np.asarray(values, dtype=np.float64)).all():
        return mean_interval(values).as_dict()
    return {"mean": math.nan, "ci95_low": math.nan, "ci95_high": math.nan, "n": len(values)}


def is_significant(cell: dict) -> bool:
    """Interval.significant for an interval dict."""
    return Interval(cell["mean"], cell["ci95_low"], cell["ci95_high"], cell["n"]).significant


def format_interval(cell: dict, digits: int = 4, percent: bool = False) -> str:
    """"0.7573 [0.7541, 0.7605]", or for a change "+5.99% [+5.10, +6.88]", with "n.s." when it holds 0;
    the mean alone without an interval (one value), "n/a" without a mean."""
    if not math.isfinite(cell["mean"]):
        return "n/a"
    sign, unit = ("+", "%") if percent else ("", "")
    text = f"{cell['mean']:{sign}.{digits}f}{unit}"
    if cell["n"] > 1 and math.isfinite(cell["ci95_low"]):
        text += f" [{cell['ci95_low']:{sign}.{digits}f}, {cell['ci95_high']:{sign}.{digits}f}]"
        if percent and not is_significant(cell):
            text += " n.s."
    return text
