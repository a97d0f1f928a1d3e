"""The paper's findings F1-F7, each judged from a study unit's results by a fixed rule (never by hand).

A verdict is `reproduced`, `not reproduced` or `inconclusive`, with the numbers it rests on. The
rules read 95% intervals: a change is in a direction when its interval excludes 0 (`_direction`), and
two things are "comparable" when the interval of their difference lies within +-EQUIVALENCE_PCT
(an equivalence test). A finding whose arms a unit did not run is inconclusive and says so.

- F1 dense 1x is worse than random hashing overall (CTR AUC, without history, as the paper's dense).
- F2 deeper dense does better, 2x > 1.5x > 1x, overall and on CTR/1D: reproduced when 2x beats 1x in
  both metrics and the means are in that order; not reproduced when 2x is worse than 1x in either, or
  equivalent to it in both.
- F3 unigram and bigram fall behind random hashing without the history and beat it with it (CTR AUC).
- F4 at large tables (bigram's (L/2) x K^2 rows) SPM beats bigram on CTR/1D, by more than on CTR AUC;
  at small tables (unigram's L x K) unigram is ahead of SPM (means).
- F5 items sharing a longer SID prefix are more similar: mean cosine increases with the prefix length.
- F6 SPM needs fewer lookups for head items than for tail items (at every size where the count varies,
  1 < mean < L, and never more elsewhere), with a mean at most unigram's L.
- F7 SIDs of an RQ-VAE v1 (items up to day T) rank comparably to v0's: each SID arm's v1/v0 CTR AUC
  change within +-EQUIVALENCE_PCT.
- F8 (Zheng et al. 2025, not the paper) SIDs reduce churn against random hashing at the same table size
  (pipeline.core.stability; each SID arm with history against random hashing with as many rows, paired by
  seed). Two clauses: (a) every such SID arm's overall churn is lower (interval below 0); (b) none's churn
  on tail or new items is higher (interval above 0). Reproduced when both hold; not reproduced when an
  arm's churn is higher overall, or on tail or new items; else inconclusive.
"""

import re

import numpy as np

from pipeline.core import stats

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
EQUIVALENCE_PCT = 1.0
# Similarity differences smaller than this count as ties (F5).
SIMILARITY_TOLERANCE = 0.01

CLAIMS = {
    "F1": "dense input at the same depth is worse than random hashing overall",
    "F2": "deeper dense models do better (2x > 1.5x > 1x), overall and on CTR/1D",
    "F3": "unigram and bigram SIDs fall behind random hashing without the history and beat it with the history",
    "F4": "SPM beats N-grams at large tables, most on CTR/1D; N-grams are slightly ahead at small tables",
    "F5": "items sharing longer SID prefixes are more similar",
    "F6": "SPM needs fewer lookups for head items, with a mean comparable to N-gram's",
    "F7": "SIDs from RQ-VAE versions trained on different periods give comparable ranking",
    "F8": "SIDs reduce prediction churn between daily retrains against random hashing at the same table size",
}


def judge(unit: dict) -> list[dict]:
    """F1-F8 for one unit (a study unit, or an experiment's results with lookups and sid_quality added)."""
    rules = (f1, f2, f3, f4, f5, f6, f7, f8)
    return [{"id": f"F{i}", "claim": CLAIMS[f"F{i}"], **rule(unit)} for i, rule in enumerate(rules, 1)]


def _direction(cell: dict) -> int:
    """+1 or -1 when the 95% interval excludes 0 on that side, else 0."""
    return 0 if not stats.is_significant(cell) else (1 if cell["mean"] > 0 else -1)


def _pct(cell: dict) -> str:
    return stats.format_interval(cell, 2, percent=True)


def _verdict(verdict: str, evidence: str) -> dict:
    return {"verdict": verdict, "evidence": evidence}


def _row(unit: dict, representation: str, use_history: bool, depth: float = 1.0) -> dict | None:
    """The unit's row of an arm, by the representation the arm asked for (a stand-in SPM size runs under it)."""
    for row in unit["rows"]:
        if (row["representation"], row["use_history"], row.get("depth_multiplier", 1.0), row.get("spm_dropout", 0.0)) == \
                (representation, use_history, depth, 0.0):
            return row
    return None


def _missing(*names: str) -> dict:
    return _verdict(INCONCLUSIVE, f"not measured here: no {' / '.join(names)} arm in this unit")


def _paired(unit: dict, arm: dict, other: dict, key: str) -> dict:
    """The % change of `arm` against `other`, paired by seed: the bootstrap's interval when the unit has one
    for this pair (bootstrap.with_user_bootstrap's `against`), else a t interval over the unit's runs."""
    bootstrapped = arm.get("against", {}).get(other["label"], {}).get(f"{key}_change_pct")
    if bootstrapped:
        return bootstrapped

    def by_seed(row):
        return {r["seed"]: r[key] for r in unit["runs"]
                if r["label"] == row["label"] and r["use_history"] == row["use_history"]}
    a, b = by_seed(arm), by_seed(other)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"{arm['label']} and {other['label']} share no seed")
    return stats.interval([100.0 * (a[s] / b[s] - 1.0) for s in seeds])


def f1(unit: dict) -> dict:
    dense = _row(unit, "dense", False)
    if dense is None:
        return _missing("dense")
    change = dense["ctr_auc_change_pct"]
    direction = _direction(change)
    verdict = {-1: REPRODUCED, 1: NOT_REPRODUCED, 0: INCONCLUSIVE}[direction]
    return _verdict(verdict, f"dense 1x vs {unit['baseline']} (no history), CTR AUC {_pct(change)}")


def compared_pairs(unit: dict) -> list[tuple[dict, dict]]:
    """The (arm, other) rows whose paired change F2 and F4 read, where the unit has both."""
    dense, spm = _f2_rows(unit), _f4_rows(unit)
    pairs = [(dense[2], dense[0])]
    if spm:
        small, large, unigram, bigram = spm
        pairs += [(large, bigram), (small, unigram)]
    return [(a, b) for a, b in pairs if a is not None and b is not None]


def _f2_rows(unit: dict) -> list[dict | None]:
    return [_row(unit, "dense", False, depth) for depth in (1.0, 1.5, 2.0)]


def _f4_rows(unit: dict) -> list[dict | None] | None:
    """SPM at unigram's and at bigram's table size, unigram, bigram (with history); None without SID stats."""
    sizes = matched_sizes(unit)
    if sizes is None:
        return None
    return [_row(unit, f"sid_spm_{size}", True) for size in sizes] + [
        _row(unit, "sid_1gram", True), _row(unit, "sid_2gram", True)]


def f2(unit: dict) -> dict:
    rows = _f2_rows(unit)
    if any(r is None for r in rows):
        return _missing("dense 1x / 1.5x / 2x")
    evidence, wins, losses, equivalent, ordered = [], 0, 0, 0, True
    for key, name in (("ctr_auc", "CTR AUC"), ("ctr_1d_auc", "CTR/1D AUC")):
        gain = _paired(unit, rows[2], rows[0], key)
        means = [r[key]["mean"] for r in rows]
        ordered &= means[0] < means[1] < means[2]
        direction = _direction(gain)
        wins += direction > 0
        losses += direction < 0
        equivalent += -EQUIVALENCE_PCT < gain["ci95_low"] and gain["ci95_high"] < EQUIVALENCE_PCT
        evidence.append(f"{name}: 2x vs 1x {_pct(gain)}; means 1x/1.5x/2x " + " / ".join(f"{m:.4f}" for m in means))
    if wins == 2 and ordered:
        verdict = REPRODUCED
    elif losses or equivalent == 2:
        verdict = NOT_REPRODUCED
    else:
        verdict = INCONCLUSIVE
    return _verdict(verdict, "; ".join(evidence))


def f3(unit: dict) -> dict:
    checks = []
    for representation in ("sid_1gram", "sid_2gram"):
        for use_history, expected in ((False, -1), (True, 1)):
            row = _row(unit, representation, use_history)
            if row is None:
                return _missing(representation)
            checks.append((representation, use_history, expected, row["ctr_auc_change_pct"]))
    directions = [_direction(cell) * expected for _, _, expected, cell in checks]
    verdict = REPRODUCED if all(d > 0 for d in directions) else NOT_REPRODUCED if any(d < 0 for d in directions) \
        else INCONCLUSIVE
    return _verdict(verdict, "; ".join(f"{rep} {'with' if h else 'without'} history {_pct(cell)} (expected "
                                       f"{'above' if e > 0 else 'below'} 0)" for rep, h, e, cell in checks))


def matched_sizes(unit: dict) -> tuple[int, int] | None:
    """Unigram's L x K and bigram's (L/2) x K^2 table rows, from the unit's SID statistics."""
    quality = unit.get("sid_quality")
    if not quality:
        return None
    levels, codes = int(quality["num_levels"]), int(quality["codebook_size"])
    return levels * codes, (levels // 2) * codes ** 2


def f4(unit: dict) -> dict:
    sizes, rows = matched_sizes(unit), _f4_rows(unit)
    if rows is None:
        return _missing("matched-size")
    small, large, unigram, bigram = rows
    if any(r is None for r in (small, large, unigram, bigram)):
        return _missing(f"sid_spm_{sizes[0]} / sid_spm_{sizes[1]} / sid_1gram / sid_2gram")
    large_1d, large_ctr = (_paired(unit, large, bigram, key) for key in ("ctr_1d_auc", "ctr_auc"))
    small_ctr = _paired(unit, small, unigram, "ctr_auc")
    evidence = [f"{large['representation']} vs sid_2gram: CTR/1D {_pct(large_1d)}, CTR {_pct(large_ctr)}",
                f"{small['representation']} vs sid_1gram: CTR {_pct(small_ctr)}"]
    stand_ins = unit.get("substituted", {}).get(f"sid_spm_{sizes[1]}")
    if stand_ins:
        evidence.append(f"SPM at bigram's {sizes[1]:,} rows was not supported by the data: "
                        f"{', '.join(sorted(set(stand_ins)))} stood in")
    if _direction(large_1d) > 0 and large_1d["mean"] >= large_ctr["mean"] and small_ctr["mean"] <= 0:
        verdict = REPRODUCED
    elif _direction(large_1d) < 0:
        verdict = NOT_REPRODUCED
    else:
        verdict = INCONCLUSIVE
    return _verdict(verdict, "; ".join(evidence))


def f5(unit: dict) -> dict:
    quality = unit.get("sid_quality")
    rows = [r for r in (quality or {}).get("prefix_similarity", []) if r.get("mean_cosine") is not None]
    if len(rows) < 2:
        return _verdict(INCONCLUSIVE, "too few prefix lengths with item pairs to compare")
    means = [r["mean_cosine"] for r in rows]
    steps = np.diff(means)
    verdict = REPRODUCED if (steps > 0).all() else NOT_REPRODUCED if (steps < -SIMILARITY_TOLERANCE).any() \
        else INCONCLUSIVE
    return _verdict(verdict, "mean cosine by shared prefix length " + ", ".join(
        f"{r['prefix_length']}: {r['mean_cosine']:.2f}" for r in rows) + " (paper: 0.41, 0.68, 0.91, 0.97)")


def f6(unit: dict) -> dict:
    rows = [r for r in unit.get("lookups") or [] if re.fullmatch(r"sid_spm_\d+", r["representation"]) and "error" not in r]
    quality = unit.get("sid_quality")
    if not rows or not quality:
        return _verdict(INCONCLUSIVE, "no SPM lookups counted in this unit")
    levels = int(quality["num_levels"])

    def lookups(row, bucket):
        return row[bucket]["mean_lookups_per_item"]

    # A vocabulary with no room to merge (every piece one code, mean L) or one that holds every item whole
    # (mean 1) gives every item the same count and cannot favour anyone: judged on the sizes in between.
    merging = [r for r in rows if 1 < r["mean_lookups_per_item"] < levels]
    head_fewer = bool(merging) and all(lookups(r, "head") < lookups(r, "tail") for r in merging) and \
        all(lookups(r, "head") <= lookups(r, "tail") for r in rows)
    comparable = all(r["mean_lookups_per_item"] <= levels for r in rows)
    verdict = REPRODUCED if head_fewer and comparable else \
        NOT_REPRODUCED if merging or not comparable else INCONCLUSIVE
    return _verdict(verdict, "; ".join(
        f"{r['representation']}: head {lookups(r, 'head'):.2f}, tail {lookups(r, 'tail'):.2f}, "
        f"mean {r['mean_lookups_per_item']:.2f}" for r in rows) + f" (unigram: {levels}, bigram: {levels // 2})")


def f7(unit: dict) -> dict:
    rows = unit.get("f7")
    if not rows:
        return _verdict(INCONCLUSIVE, "not measured here: no RQ-VAE v1 in this unit")
    cells = [(r["label"], r["ctr_auc_change_pct"]) for r in rows]
    inside = all(-EQUIVALENCE_PCT < c["ci95_low"] and c["ci95_high"] < EQUIVALENCE_PCT for _, c in cells)
    outside = any(c["ci95_low"] > EQUIVALENCE_PCT or c["ci95_high"] < -EQUIVALENCE_PCT for _, c in cells)
    verdict = REPRODUCED if inside else NOT_REPRODUCED if outside else INCONCLUSIVE
    return _verdict(verdict, "CTR AUC v1 vs v0: " + "; ".join(f"{label} {_pct(c)}" for label, c in cells)
                    + f" (comparable: within +-{EQUIVALENCE_PCT:g}%)")


_SID_SIZED = re.compile(r"sid_(?:spm|prefix)_(?P<size>\d+)|sid_(?P<n>\d)gram")


def churn_pairs(unit: dict) -> list[tuple[dict, dict]]:
    """(SID arm, random hashing with as many table rows) with history, for every SID arm whose size the unit ran."""
    quality = unit.get("sid_quality")
    pairs = []
    for row in unit["rows"]:
        match = _SID_SIZED.fullmatch(row["representation"])
        if not match or not row["use_history"] or row.get("spm_dropout", 0.0) or row.get("depth_multiplier", 1.0) != 1:
            continue
        if match["size"]:
            size = int(match["size"])
        elif quality:
            n = int(match["n"])
            size = (int(quality["num_levels"]) // n) * int(quality["codebook_size"]) ** n
        else:
            continue
        other = _row(unit, f"random_hash_{size}", True)
        if other is not None and "churn_overall" in row and "churn_overall" in other:
            pairs.append((row, other))
    return pairs


def f8(unit: dict) -> dict:
    pairs = churn_pairs(unit)
    if not pairs:
        return _verdict(INCONCLUSIVE, "not measured here: no SID arm with random hashing of its table size and "
                                      "churn on the stability probe")
    lower, higher, evidence = True, False, []
    for arm, other in pairs:
        changes = {name: _paired(unit, arm, other, f"churn_{name}") for name in ("overall", "tail", "new")
                   if f"churn_{name}" in arm and f"churn_{name}" in other}
        lower &= _direction(changes["overall"]) < 0
        higher |= any(_direction(c) > 0 for c in changes.values())
        evidence.append(f"{arm['label']} vs {other['label']}: churn " + ", ".join(
            f"{name} {_pct(c)}" for name, c in changes.items()) + f" (random hashing's {other['churn_overall']['mean']:.4f})")
    verdict = NOT_REPRODUCED if higher else REPRODUCED if lower else INCONCLUSIVE
    return _verdict(verdict, "; ".join(evidence))
