"""SID quality statistics against values worked out by hand."""

import numpy as np
import pytest

from pipeline.sid import sid_quality


def test_prefix_similarity_by_hand():
    # Items 0,1 share (0, 0) = the whole SID; item 2 shares only level 1 with them; item 3 nothing.
    sids = np.array([[0, 0], [0, 0], [0, 1], [1, 0]])
    e = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    table = sid_quality.prefix_similarity(sids, e * 3.0)  # scale must not matter
    # Exactly length 1: pairs (0,2), (1,2): cos 0 and 0.  Exactly length 2: pair (0,1): cos 1.
    assert [row["pairs"] for row in table] == [2, 1]
    assert table[0]["mean_cosine"] == pytest.approx(0.0)
    assert table[1]["mean_cosine"] == pytest.approx(1.0)


def test_usage_and_uniqueness_by_hand():
    sids = np.array([[0, 1], [0, 1], [2, 3], [1, 3]])
    usage = sid_quality.level_usage(sid_quality.code_counts(sids, codebook_size=4))
    assert [u["codes_used"] for u in usage] == [3, 2]
    assert usage[0]["utilisation"] == 0.75
    # Level 2: codes 1 and 3 used twice each: perplexity = exp(ln 2) = 2.
    assert usage[1]["perplexity"] == pytest.approx(2.0)
    u = sid_quality.uniqueness(sid_quality.prefix_size_histograms(sids)[-1])
    assert (u["distinct_sids"], u["max_items_per_sid"], u["unique_sid_ratio"]) == (3, 2, 0.75)
    assert u["items_per_sid_histogram"] == {1: 2, 2: 1}


@pytest.mark.parametrize("values", [[3], [1, 2], [5, 1, 1, 2, 9, 9, 9], list(range(17)) + [3] * 5])
def test_percentile_from_histogram_equals_numpy(values):
    hist = {v: values.count(v) for v in set(values)}
    for q in (0, 25, 50, 75, 100):
        assert sid_quality.percentile(hist, q) == np.percentile(values, q)


def test_reconstruction_r2():
    x = np.array([[0.0, 1.0], [2.0, 3.0]])
    assert sid_quality.reconstruction(x, x) == {"mse": 0.0, "r2": 1.0}
    assert sid_quality.reconstruction(x, np.tile(x.mean(0), (2, 1)))["r2"] == pytest.approx(0.0)


def test_bottom_k_sample_does_not_depend_on_order():
    ids = np.array([f"item{i}" for i in range(1000)])
    picked = set(ids[sid_quality.bottom_k(ids, 50)])
    shuffled = ids[np.random.default_rng(0).permutation(1000)]
    assert set(shuffled[sid_quality.bottom_k(shuffled, 50)]) == picked and len(picked) == 50


def test_report_subtrie_sizes_cover_every_item():
    sids = np.array([[0, 0], [0, 1], [0, 2], [1, 0]])
    rep = sid_quality.report(sids, np.eye(4), [f"i{i}" for i in range(4)], codebook_size=4, sample_size=2)
    assert rep["prefix_similarity_sample"] == 2
    # Level-1 sub-tries hold 3 and 1 items (whole corpus, not the sample).
    assert rep["prefix_similarity"][0]["subtrie_size_p25"] == pytest.approx(1.5)
    assert rep["prefix_similarity"][0]["subtrie_size_p75"] == pytest.approx(2.5)
    assert "levels" in rep and "reconstruction" not in rep
