"""The verdict rules of F1-F8 on units built by hand: each rule's three outcomes."""

from pipeline.stages import findings
from pipeline.stages.findings import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED


def _cell(mean, low, high, n=3):
    return {"mean": mean, "ci95_low": low, "ci95_high": high, "n": n}


def _row(representation, use_history, change=(0.0, -1.0, 1.0), change_1d=(0.0, -1.0, 1.0), depth=1.0,
         auc=0.7, auc_1d=0.6, baseline=False):
    label = representation + ("" if depth == 1 else f"_{depth:g}x") + ("" if use_history or representation == "dense"
                                                                       else "_no_history")
    return {"label": label, "representation": representation, "use_history": use_history, "depth_multiplier": depth,
            "is_baseline": baseline, "ctr_auc": _cell(auc, auc - 0.01, auc + 0.01),
            "ctr_1d_auc": _cell(auc_1d, auc_1d - 0.01, auc_1d + 0.01),
            "ctr_auc_change_pct": _cell(*change), "ctr_1d_auc_change_pct": _cell(*change_1d)}


def _runs(row, ctr, ctr_1d):
    """Per-seed runs of a row: CTR AUC and CTR/1D AUC by seed (the paired rules read these)."""
    return [{"label": row["label"], "use_history": row["use_history"], "seed": s, "ctr_auc": a, "ctr_1d_auc": b}
            for s, (a, b) in enumerate(zip(ctr, ctr_1d))]


def _unit(rows, runs=(), **extra):
    return {"name": "w", "baseline": "random_hash_8192", "rows": rows, "runs": list(runs), **extra}


def _verdict(rule, unit):
    return rule(unit)["verdict"]


def test_f1_follows_the_sign_of_dense_s_interval():
    for change, expected in (((-2.0, -3.0, -1.0), REPRODUCED), ((2.0, 1.0, 3.0), NOT_REPRODUCED),
                             ((-1.0, -3.0, 1.0), INCONCLUSIVE)):
        assert _verdict(findings.f1, _unit([_row("dense", False, change)])) == expected
    assert _verdict(findings.f1, _unit([])) == INCONCLUSIVE  # not measured


def test_f2_needs_2x_above_1x_in_both_metrics_and_ordered_means():
    def unit(ctr, ctr_1d):
        rows = [_row("dense", False, depth=d, auc=a[0], auc_1d=b[0]) for d, a, b in zip((1.0, 1.5, 2.0), ctr, ctr_1d)]
        return _unit(rows, [run for row, a, b in zip(rows, ctr, ctr_1d) for run in _runs(row, a, b)])

    up = ([0.70, 0.70, 0.70], [0.71, 0.71, 0.71], [0.72, 0.721, 0.719])
    assert _verdict(findings.f2, unit(up, up)) == REPRODUCED
    down = ([0.72, 0.72, 0.72], [0.71, 0.71, 0.71], [0.70, 0.701, 0.699])
    assert _verdict(findings.f2, unit(up, down)) == NOT_REPRODUCED
    flat = ([0.70, 0.70, 0.70], [0.70, 0.70, 0.70], [0.70, 0.7001, 0.6999])
    assert _verdict(findings.f2, unit(flat, flat)) == NOT_REPRODUCED  # equivalent within 1% in both
    noisy = ([0.70, 0.70, 0.70], [0.71, 0.71, 0.71], [0.75, 0.66, 0.73])
    assert _verdict(findings.f2, unit(noisy, noisy)) == INCONCLUSIVE
    # Each clause alone: 2x wins in both but 1.5x has the highest means (the order of the means);
    unordered = ([0.70, 0.70, 0.70], [0.73, 0.73, 0.73], [0.72, 0.721, 0.719])
    assert _verdict(findings.f2, unit(unordered, unordered)) == INCONCLUSIVE
    # 2x wins on CTR AUC only, the means in order (a win in both metrics);
    assert _verdict(findings.f2, unit(up, noisy)) == INCONCLUSIVE
    # equivalent on CTR AUC only, CTR/1D unclear (equivalence in both metrics).
    assert _verdict(findings.f2, unit(flat, noisy)) == INCONCLUSIVE


def test_f3_wants_n_grams_below_without_history_and_above_with_it():
    below, above, unclear = (-2.0, -3.0, -1.0), (2.0, 1.0, 3.0), (0.5, -1.0, 2.0)

    def unit(without, with_history):
        return _unit([_row(r, h, c) for r in ("sid_1gram", "sid_2gram")
                      for h, c in ((False, without), (True, with_history))])

    assert _verdict(findings.f3, unit(below, above)) == REPRODUCED
    assert _verdict(findings.f3, unit(above, above)) == NOT_REPRODUCED
    assert _verdict(findings.f3, unit(below, unclear)) == INCONCLUSIVE


def test_f4_reads_spm_against_n_grams_at_matched_sizes_with_substitutions():
    quality = {"num_levels": 4, "codebook_size": 16}  # unigram 64 rows, bigram 2 x 256 = 512

    def unit(spm_large_1d, spm_small_ctr, substituted=None, spm_large_ctr=(0.701, 0.702, 0.7015)):
        rows = [_row("sid_1gram", True), _row("sid_2gram", True), _row("sid_spm_64", True), _row("sid_spm_512", True)]
        runs = (_runs(rows[0], [0.70] * 3, [0.6] * 3) + _runs(rows[1], [0.70] * 3, [0.6] * 3)
                + _runs(rows[2], spm_small_ctr, [0.6] * 3) + _runs(rows[3], spm_large_ctr, spm_large_1d))
        stand_ins = {"sid_spm_512": ["sid_spm_400", "sid_spm_410"]} if substituted else {}
        return _unit(rows, runs, sid_quality=quality, substituted=stand_ins)

    assert _verdict(findings.f4, unit([0.63, 0.64, 0.635], [0.69] * 3)) == REPRODUCED
    assert _verdict(findings.f4, unit([0.57, 0.56, 0.565], [0.69] * 3)) == NOT_REPRODUCED
    assert _verdict(findings.f4, unit([0.63, 0.64, 0.635], [0.71] * 3)) == INCONCLUSIVE  # SPM ahead at small size
    # Each other clause alone: SPM's large-table gain is larger on CTR AUC (+10.7%) than on CTR/1D (+5.8%);
    assert _verdict(findings.f4, unit([0.63, 0.64, 0.635], [0.69] * 3, spm_large_ctr=(0.77, 0.78, 0.775))) \
        == INCONCLUSIVE
    # the CTR/1D gain's interval holds 0 although its mean is positive and above the CTR gain's.
    assert _verdict(findings.f4, unit([0.55, 0.70, 0.62], [0.69] * 3)) == INCONCLUSIVE
    substituted = findings.f4(unit([0.63, 0.64, 0.635], [0.69] * 3, substituted=True))
    assert substituted["verdict"] == REPRODUCED and "sid_spm_400, sid_spm_410 stood in" in substituted["evidence"]
    assert _verdict(findings.f4, _unit([_row("sid_2gram", True)], sid_quality=quality)) == INCONCLUSIVE


def test_f5_wants_similarity_rising_with_the_prefix_length():
    def unit(means):
        return _unit([], sid_quality={"prefix_similarity": [{"prefix_length": n + 1, "mean_cosine": m}
                                                            for n, m in enumerate(means)]})

    assert _verdict(findings.f5, unit([0.41, 0.68, 0.91, 0.97])) == REPRODUCED
    assert _verdict(findings.f5, unit([0.41, 0.68, 0.60, 0.97])) == NOT_REPRODUCED
    assert _verdict(findings.f5, unit([0.41, 0.68, 0.675, 0.97])) == INCONCLUSIVE  # a tie within 0.01
    assert _verdict(findings.f5, unit([0.41])) == INCONCLUSIVE


def test_f6_wants_fewer_head_lookups_and_a_mean_within_unigram_s():
    def lookups(head, tail, mean, rows=2048):
        return {"representation": f"sid_spm_{rows}", "table_rows": rows, "mean_lookups_per_item": mean,
                "head": {"mean_lookups_per_item": head}, "tail": {"mean_lookups_per_item": tail}}

    quality = {"num_levels": 4}
    assert _verdict(findings.f6, _unit([], lookups=[lookups(1.2, 2.5, 2.3)], sid_quality=quality)) == REPRODUCED
    assert _verdict(findings.f6, _unit([], lookups=[lookups(2.5, 1.2, 1.4)], sid_quality=quality)) == NOT_REPRODUCED
    assert _verdict(findings.f6, _unit([], lookups=[lookups(1.2, 2.5, 4.5)], sid_quality=quality)) == NOT_REPRODUCED
    assert _verdict(findings.f6, _unit([], lookups=[], sid_quality=quality)) == INCONCLUSIVE
    # A vocabulary of single codes (mean L) has nothing to merge: it neither counts for nor against.
    no_merges = lookups(4.0, 4.0, 4.0, rows=1025)
    assert _verdict(findings.f6, _unit([], lookups=[no_merges, lookups(1.2, 2.5, 2.3)], sid_quality=quality)) == REPRODUCED
    assert _verdict(findings.f6, _unit([], lookups=[no_merges], sid_quality=quality)) == INCONCLUSIVE
    every_item_whole = lookups(1.0, 1.0, 1.0, rows=32768)  # the other end: one piece per item
    assert _verdict(findings.f6, _unit([], lookups=[lookups(1.2, 2.5, 2.3), every_item_whole],
                                       sid_quality=quality)) == REPRODUCED
    # "Never more elsewhere": a size that merges nothing may not give head items more lookups than tail ones.
    head_more = lookups(4.0, 3.5, 4.0, rows=1025)
    assert _verdict(findings.f6, _unit([], lookups=[lookups(1.2, 2.5, 2.3), head_more],
                                       sid_quality=quality)) == NOT_REPRODUCED


def test_f7_is_an_equivalence_test_within_one_percent():
    def unit(*changes):
        return _unit([], f7=[{"label": f"arm{i}", "ctr_auc_change_pct": _cell(*c)} for i, c in enumerate(changes)])

    assert _verdict(findings.f7, unit((0.1, -0.4, 0.6), (-0.2, -0.9, 0.5))) == REPRODUCED
    assert _verdict(findings.f7, unit((0.1, -0.4, 0.6), (-2.0, -2.5, -1.5))) == NOT_REPRODUCED
    assert _verdict(findings.f7, unit((0.1, -1.4, 1.6))) == INCONCLUSIVE
    assert _verdict(findings.f7, _unit([])) == INCONCLUSIVE


def test_judge_states_every_finding_once():
    verdicts = findings.judge(_unit([]))
    assert [v["id"] for v in verdicts] == [f"F{i}" for i in range(1, 9)]
    assert all(v["verdict"] in findings.VERDICTS and v["claim"] and v["evidence"] for v in verdicts)


def test_a_paired_difference_without_spread_has_a_zero_width_interval():
    rows = [_row("sid_1gram", True), _row("sid_2gram", True)]
    unit = _unit(rows, _runs(rows[0], [0.7] * 3, [0.6] * 3) + _runs(rows[1], [0.7] * 3, [0.6] * 3))
    cell = findings._paired(unit, rows[1], rows[0], "ctr_auc")
    assert cell["mean"] == 0.0 and cell["ci95_low"] == cell["ci95_high"] == 0.0


def test_a_bootstrapped_pair_is_read_from_the_bootstrap_not_the_seeds():
    rows = [_row("sid_1gram", True), _row("sid_2gram", True)]
    unit = _unit(rows, _runs(rows[0], [0.7] * 3, [0.6] * 3) + _runs(rows[1], [0.7] * 3, [0.6] * 3))
    rows[1]["against"] = {rows[0]["label"]: {"ctr_auc_change_pct": _cell(0.0, -0.8, 0.8)}}
    assert findings._paired(unit, rows[1], rows[0], "ctr_auc") == _cell(0.0, -0.8, 0.8)  # the users' noise too
    assert findings._paired(unit, rows[1], rows[0], "ctr_1d_auc")["ci95_low"] == 0.0  # no bootstrap: the seeds'
    shape = {"sid_quality": {"num_levels": 4, "codebook_size": 256}}
    assert findings.compared_pairs({**unit, **shape}) == []  # no SPM or dense arms here
    spm = [_row("sid_spm_1024", True), _row("sid_spm_131072", True)]
    assert [(a["label"], b["label"]) for a, b in findings.compared_pairs(_unit(rows + spm, **shape))] == [
        ("sid_spm_131072", "sid_2gram"), ("sid_spm_1024", "sid_1gram")]


def test_f8_wants_less_churn_than_random_hashing_of_the_same_size_and_no_more_on_tail_or_new_items():
    quality = {"num_levels": 4, "codebook_size": 16}  # bigram: 2 x 256 = 512 rows

    def unit(sid_churn, random_churn=(0.010, 0.012, 0.011), tail_new=None, size=512):
        """SPM 512 and bigram against random hashing at `size` rows; per seed churn (overall, tail, new)."""
        rows, runs = [], []
        for representation, churn in (("random_hash_512", random_churn), ("sid_spm_512", sid_churn),
                                      ("sid_2gram", sid_churn)):
            if representation == "random_hash_512" and size != 512:
                representation = f"random_hash_{size}"
            sliced = {"overall": churn, "tail": churn, "new": churn}
            if tail_new and representation != f"random_hash_{size}":
                sliced.update(tail_new)
            row = _row(representation, True)
            row.update({f"churn_{k}": _cell(sum(v) / 3, min(v), max(v)) for k, v in sliced.items()})
            rows.append(row)
            runs += [{"label": row["label"], "use_history": True, "seed": s,
                      **{f"churn_{k}": v[s] for k, v in sliced.items()}} for s in range(3)]
        return _unit(rows, runs, sid_quality=quality)

    lower, higher = (0.006, 0.007, 0.0065), (0.015, 0.016, 0.0155)
    assert _verdict(findings.f8, unit(lower)) == REPRODUCED
    assert len(findings.churn_pairs(unit(lower))) == 2  # SPM 512 and bigram's 512 rows, against one random hashing
    assert _verdict(findings.f8, unit(higher)) == NOT_REPRODUCED
    # Each clause alone: overall lower but churn on new items higher (b);
    assert _verdict(findings.f8, unit(lower, tail_new={"new": higher})) == NOT_REPRODUCED
    # overall not lower beyond the noise, nothing higher (a).
    assert _verdict(findings.f8, unit((0.005, 0.016, 0.011))) == INCONCLUSIVE
    # Random hashing of another size: nothing to compare.
    assert _verdict(findings.f8, unit(lower, size=8192)) == INCONCLUSIVE
    assert "random_hash_512" in findings.f8(unit(lower))["evidence"]
