"""The simulator's properties, checked with numbers."""

import dataclasses

import numpy as np
import pytest

from pipeline.core.metrics import binary_auc
from pipeline.data.simulator import SimulatorConfig, simulate

SMALL = SimulatorConfig(num_items=3_000, num_users=800, num_days=4, impressions_per_day=6_000,
                        embedding_dim=64)


@pytest.fixture(scope="module")
def demo():
    """The default (demo-scale) world: the claims below are about the defaults."""
    return simulate(SimulatorConfig())


def test_same_seed_same_data_other_seed_other_data():
    a, b = simulate(SMALL), simulate(SMALL)
    for field in dataclasses.fields(a):
        np.testing.assert_array_equal(getattr(a, field.name), getattr(b, field.name), err_msg=field.name)
    c = simulate(dataclasses.replace(SMALL, seed=1))
    assert not np.array_equal(a.click, c.click)
    assert not np.array_equal(a.item_ids, c.item_ids)


def test_cold_start_share_at_least_five_percent_every_day(demo):
    cold = demo.first_day[demo.candidate] == demo.day
    for day in range(1, SimulatorConfig().num_days + 1):
        share = cold[demo.day == day].mean()
        assert share >= 0.05, f"day {day}: cold-start share {share:.3f}"
    # New items arrive every day and are never impressed before they exist.
    assert set(np.unique(demo.first_day)) == set(range(0, SimulatorConfig().num_days + 1))
    assert (demo.first_day[demo.candidate] <= demo.day).all()
    assert (demo.first_day[demo.watch] <= demo.day).all()


def test_cosine_similarity_grows_with_shared_topic_depth(demo):
    rng = np.random.default_rng(0)
    path = demo.topic_path
    means = []
    for depth in range(path.shape[1] + 1):
        # Pairs that share exactly `depth` topic levels: same prefix, then (if any) a different node.
        i = rng.integers(0, len(path), 200_000)
        j = rng.integers(0, len(path), 200_000)
        shared = np.cumprod(path[i] == path[j], axis=1).sum(1)
        pick = (shared == depth) & (i != j)
        assert pick.sum() > 20, f"too few pairs at depth {depth}"
        means.append(float((demo.embeddings[i[pick]] * demo.embeddings[j[pick]]).sum(1).mean()))
    assert np.all(np.diff(means) > 0.02), means
    assert abs(means[0]) < 0.05 and means[-1] > 0.9, means


def test_oracle_auc_well_above_chance_and_below_one(demo):
    for day in np.unique(demo.day):
        rows = demo.day == day
        auc = binary_auc(demo.click[rows], demo.true_ctr[rows])
        assert 0.65 < auc < 0.97, f"day {day}: oracle AUC {auc:.4f}"


def _ridge_r2(x, y, alpha=1.0):
    """Held-out R^2 of a ridge regression (fit on one half of the rows, scored on the other)."""
    half = len(x) // 2
    x = np.hstack([x, np.ones((len(x), 1))])
    a, b = x[:half], y[:half]
    w = np.linalg.solve(a.T @ a + alpha * np.eye(x.shape[1]), a.T @ b)
    residual = y[half:] - x[half:] @ w
    return 1 - residual.var() / y[half:].var()


def test_item_quality_is_not_linearly_predictable_from_content(demo):
    assert _ridge_r2(demo.embeddings, demo.quality) < 0.1
    # The same regression does recover a content-driven target, so the check has teeth.
    topic_signal = np.sin(demo.topic_path[:, 1]).astype(np.float64)
    assert _ridge_r2(demo.embeddings, topic_signal) > 0.5


def test_clicks_depend_on_both_quality_and_content(demo):
    relatedness = (demo.embeddings[demo.watch] * demo.embeddings[demo.candidate]).sum(1)
    assert binary_auc(demo.click, demo.quality[demo.candidate]) > 0.6
    assert binary_auc(demo.click, relatedness) > 0.6


def test_popularity_is_power_law(demo):
    counts = np.sort(np.bincount(demo.candidate, minlength=len(demo.item_ids)))[::-1]
    top_percent = counts[: len(counts) // 100].sum() / counts.sum()
    assert top_percent > 0.25, f"top 1% of items get only {top_percent:.1%} of impressions"
    assert np.median(counts) < counts.mean() / 2


def test_labels_and_engagement(demo):
    assert set(np.unique(demo.click)) == {0, 1}
    assert ((demo.engagement >= 0) & (demo.engagement <= 1)).all()
    assert (demo.engagement[demo.click == 0] == 0).all()
    assert np.corrcoef(demo.engagement, demo.true_ctr)[0, 1] > 0.3
    assert abs(demo.click.mean() - demo.true_ctr.mean()) < 0.01


def test_histories_are_most_recent_click_first_and_capped():
    config = SMALL
    data = simulate(config)
    h = data.history
    assert h.shape[1] == config.max_history
    lengths = (h >= 0).sum(1)
    assert (lengths >= 1).all()
    # Padding only at the end.
    assert ((h >= 0) == (np.arange(h.shape[1])[None, :] < lengths[:, None])).all()
    # Rounds of one day: each impression sees the histories as they were when its round began.
    bounds = np.linspace(0, config.impressions_per_day, config.rounds_per_day + 1).astype(int)
    within_day = np.arange(data.num_impressions) % config.impressions_per_day
    round_id = (data.day - 1) * config.rounds_per_day + np.searchsorted(bounds, within_day, side="right") - 1
    rng = np.random.default_rng(0)
    checked = 0
    for i in rng.choice(np.flatnonzero(round_id > 0), 300, replace=False):
        earlier = np.flatnonzero((data.user == data.user[i]) & (round_id < round_id[i]) & (data.click == 1))
        if earlier.size:
            assert h[i, 0] == data.candidate[earlier[-1]], f"impression {i}"
            checked += 1
    assert checked > 50


def test_item_ids_are_opaque_unique_strings(demo):
    assert len(np.unique(demo.item_ids)) == len(demo.item_ids)
    assert all(len(i) == 11 for i in demo.item_ids[:100])
    assert not any(i.isdigit() for i in demo.item_ids[:100])


def test_paper_embedding_dimension_works():
    data = simulate(dataclasses.replace(SMALL, embedding_dim=2048, num_days=2))
    assert data.embeddings.shape == (SMALL.num_items, 2048)
    np.testing.assert_allclose(np.linalg.norm(data.embeddings, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("change, message", [
    ({"topic_branching": (8, 8)}, "at least 3 levels"),
    ({"topic_weights": (1.0, 0.5)}, "one weight per level"),
    ({"fresh_share": 1.5}, "fresh_share"),
    ({"num_days": 0}, "num_days"),
])
def test_bad_config_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **change)


def test_world_knob_moves_the_clicks_from_content_to_item_quality():
    """The named worlds share the draws; only the signals' weights move (balanced is the defaults as given)."""
    balanced = simulate(SMALL)
    assert SMALL.world == "balanced" and SMALL.signal_weights == (SMALL.quality_std, SMALL.affinity_weight,
                                                                  SMALL.relatedness_weight)
    np.testing.assert_array_equal(simulate(dataclasses.replace(SMALL, world="0.5")).true_ctr, balanced.true_ctr)
    shares = []
    for world in ("content", "balanced", "memorisation"):
        data = simulate(dataclasses.replace(SMALL, world=world))
        logit = np.log(data.true_ctr / (1 - data.true_ctr))
        quality = data.quality[data.candidate]
        # The share of the click logit's variance that the per-item quality explains.
        shares.append(np.corrcoef(logit, quality)[0, 1] ** 2)
    assert shares[0] < shares[1] < shares[2] and shares[0] < 0.15 and shares[2] > 0.5, shares


@pytest.mark.parametrize("world", ["everything", "1.5", "-0.1"])
def test_unknown_world_is_refused(world):
    with pytest.raises(ValueError, match="world must be one of content, balanced, memorisation"):
        dataclasses.replace(SMALL, world=world)


def test_a_drifting_world_is_the_same_world_until_the_drift_then_brings_a_new_topic():
    still, drifting = simulate(SMALL), simulate(dataclasses.replace(SMALL, drift_day=3, drift_share=0.5))
    before = still.first_day < 3
    np.testing.assert_array_equal(drifting.embeddings[before], still.embeddings[before])
    np.testing.assert_array_equal(drifting.first_day, still.first_day)
    days = still.day < 3
    for field in ("user", "candidate", "click"):  # every draw before the drift is the same
        np.testing.assert_array_equal(getattr(drifting, field)[days], getattr(still, field)[days], err_msg=field)
    # About half the items arriving from day 3 come from a top-level topic no earlier item has.
    new_topic = drifting.topic_path[:, 0] == SMALL.topic_branching[0]
    arrived = still.first_day >= 3
    assert not new_topic[~arrived].any() and 0.35 < new_topic[arrived].mean() < 0.65
    # Their content is far from everything before: nearest earlier item by cosine.
    nearest = (drifting.embeddings[arrived] @ drifting.embeddings[before].T).max(1)
    assert nearest[new_topic[arrived]].mean() < nearest[~new_topic[arrived]].mean() - 0.2
    assert np.isin(np.flatnonzero(new_topic), drifting.candidate[drifting.day >= 3]).any()  # they are impressed
    # A world without drift keeps the fingerprint it had before the drift existed.
    assert "drift_day" not in SMALL.fingerprint_fields()
    assert dataclasses.replace(SMALL, drift_day=3).fingerprint_fields()["drift_day"] == 3
    with pytest.raises(ValueError, match="drift_day must be in"):
        dataclasses.replace(SMALL, drift_day=5)
