"""SID health signals (pipeline.sid.sid_health) against values worked out by hand."""

import numpy as np
import pytest

from pipeline.core import features as fk
from pipeline.core import row_lookups
from pipeline.core.tf_env import tf
from pipeline.sid import sid_health


def test_perplexity_is_the_effective_number_of_codes():
    assert sid_health.perplexity(np.array([3, 3, 5, 5])) == pytest.approx(2.0)
    assert sid_health.perplexity(np.array([7] * 9)) == pytest.approx(1.0)
    p = np.array([0.5, 0.25, 0.25])
    assert sid_health.perplexity(np.array([1, 1, 2, 3])) == pytest.approx(np.exp(-(p * np.log(p)).sum()))


def test_the_shared_sid_rate_counts_rows_whose_full_sid_occurs_twice():
    among = np.array([[1, 2], [1, 2], [1, 3], [4, 4], [5, 5]])
    assert sid_health.shared_sid_rate(among, among) == pytest.approx(2 / 5)
    assert sid_health.shared_sid_rate(among[2:4], among) == 0.0  # [1, 3] and [4, 4] occur once
    assert sid_health.shared_sid_rate(among[:1], among) == 1.0


def test_new_items_crowding_into_few_codes_advise_a_refresh_and_a_lineage_like_day_does_not():
    rng = np.random.default_rng(0)
    lineage = rng.integers(0, 32, size=(2000, 3))
    like = rng.integers(0, 32, size=(100, 3))  # drawn as the lineage's
    crowded = np.column_stack([rng.integers(0, 2, 100), rng.integers(0, 2, 100), rng.integers(0, 4, 100)])
    metrics = {"examples": 1000, "cold_start_examples": 150, "ctr_1d_auc": 0.7}
    fine = sid_health.day_health(like, lineage, np.concatenate([lineage, like]), metrics, [])
    assert fine["refresh_advised"] is False and fine["tripped"] == [] and fine["cold_start_share"] == 0.15
    assert 0.85 < fine["perplexity_ratio"][0] < 1.15 and fine["collision_rate"] - fine["lineage_collision_rate"] < 0.1
    aged = sid_health.day_health(crowded, lineage, np.concatenate([lineage, crowded]),
                                 {**metrics, "untrained_piece_share": 0.01, "untrained_piece_share_new": 0.2}, [])
    assert aged["refresh_advised"] and len(aged["tripped"]) == 1 and "collision rate" in aged["tripped"][0]
    # The spread and the untrained pieces are recorded, not tripped on.
    assert aged["perplexity_ratio"][0] == pytest.approx(
        sid_health.perplexity(crowded[:, 0]) / sid_health.expected_perplexities(lineage, 100)[0])
    assert aged["perplexity_ratio"][0] < 0.2
    assert (aged["untrained_piece_share"], aged["untrained_piece_share_new"]) == (0.01, 0.2)
    # Too few new items: no SID signal is read; CTR/1D AUC below its trailing mean trips alone.
    few = sid_health.day_health(crowded[:5], lineage, lineage, {**metrics, "ctr_1d_auc": 0.6},
                                [{"ctr_1d_auc": a} for a in (0.70, 0.71, 0.69)])
    assert "collision_rate" not in few and few["ctr_1d_drop"] == pytest.approx(0.1)
    assert few["refresh_advised"] and few["tripped"][0].startswith("CTR/1D AUC 0.6000")
    # Fewer earlier steps than the trailing window: no drop is read.
    assert "ctr_1d_drop" not in sid_health.day_health(like, lineage, lineage, metrics, [{"ctr_1d_auc": 0.9}])


def test_row_lookups_count_every_piece_feature_and_the_untrained_share_reads_them():
    def batch(candidates, cold, watch=((0,),) * 2):
        ragged = lambda rows: tf.ragged.constant(rows, dtype=tf.int64).to_sparse()  # noqa: E731  (as parsed)
        return {fk.CANDIDATE_PIECES: ragged(candidates), fk.WATCH_PIECES: ragged(watch),
                fk.HISTORY_PIECES: ragged([[1], []]), fk.COLD_START: tf.constant([[c] for c in cold], tf.int64)}

    day = [batch([[2, 3], [3]], [0, 1]), batch([[4], [2, 2]], [0, 0])]
    counts = row_lookups.count(day, rows=6)
    np.testing.assert_array_equal(counts, [4, 2, 3, 2, 1, 0])  # watch 0 x4, history 1 x2, candidates 2 3 3 4 2 2
    without_history = row_lookups.count(day, rows=6, keys=row_lookups.PIECE_KEYS[:2])
    assert without_history[1] == 0
    trained = np.array([1, 1, 1, 0, 0, 0])  # rows 3 and 4 never looked up
    shares = row_lookups.shares(*map(np.concatenate, zip(*(row_lookups.untrained(b, trained) for b in day))))
    assert shares["untrained_piece_share"] == pytest.approx(3 / 6)  # 3, 3 and 4 of 2 3 3 4 2 2
    assert shares["untrained_piece_share_new"] == pytest.approx(1.0)  # the new item's one piece: 3
