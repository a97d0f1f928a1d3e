"""The MovieLens loader turns the real files into valid corpus and log contracts."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from pipeline.data import corpus_io
from pipeline.data import log_io
from pipeline.data import movielens
from pipeline.core.contracts import ContractError
from pipeline.core.layout import DataLayout

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def loaded(movielens_dir, tmp_path_factory):
    rejects = str(tmp_path_factory.mktemp("ml") / "rejects.jsonl")
    corpus, impressions = movielens.load(movielens.MovieLensConfig(data_dir=movielens_dir), rejects)
    return corpus, impressions, rejects


def test_corpus_has_every_movie_with_its_embedding(loaded, movielens_dir):
    corpus, _, _ = loaded
    embeddings = np.load(os.path.join(movielens_dir, "item_embeddings.npy"))
    assert corpus.size == 9742 and corpus.dim == 384
    np.testing.assert_array_equal(corpus.embeddings, embeddings)
    assert corpus.titles[0] == "Toy Story (1995)"
    assert (corpus.first_day >= 1).all()


def test_every_rating_is_an_impression_or_written_aside(loaded, movielens_dir):
    _, impressions, rejects = loaded
    ratings = pd.read_csv(os.path.join(movielens_dir, "ratings.csv"))
    with open(rejects) as f:
        rejected = [json.loads(line) for line in f]
    assert impressions.size + len(rejected) == len(ratings)
    # Exactly each user's first rating lacks a watch item.
    assert len(rejected) == ratings["userId"].nunique()
    assert {r["field"] for r in rejected} == {"watch_item_id"}
    assert impressions.click.mean() == pytest.approx(
        (ratings.groupby("userId", group_keys=False).apply(lambda g: g.sort_values(["timestamp", "movieId"]).iloc[1:])
         ["rating"] >= 4).mean())


def test_watch_item_and_history_of_one_user_by_hand(loaded, movielens_dir):
    _, impressions, _ = loaded
    ratings = pd.read_csv(os.path.join(movielens_dir, "ratings.csv"))
    user = ratings[ratings["userId"] == 5].sort_values(["timestamp", "movieId"], kind="stable")
    movies = user["movieId"].astype(str).tolist()
    rows = np.flatnonzero(impressions.user_id == "5")
    assert len(rows) == len(movies) - 1
    # The 26th rating (index 25): watch = the 25th movie, history = movies 24..5 (20 most recent).
    row = rows[24]
    assert impressions.candidate_item_id[row] == movies[25]
    assert impressions.watch_item_id[row] == movies[24]
    assert impressions.history(row) == movies[24::-1][:20]
    assert impressions.engagement[row] == pytest.approx(user["rating"].iloc[25] / 5)


def test_steps_are_a_workable_number_by_default_and_configurable(loaded, movielens_dir):
    _, impressions, _ = loaded
    # 15 steps of equal size (about 6,700 ratings each, less each user's first rating, written aside).
    assert impressions.day.min() == 1 and impressions.day.max() == 15
    assert np.bincount(impressions.day)[1:].min() > 6_000
    _, by_count = movielens.load(movielens.MovieLensConfig(data_dir=movielens_dir, ratings_per_step=10_000),
                                 rejects_path=os.devnull)
    assert by_count.day.max() == 11  # 100,836 ratings in steps of 10,000
    _, by_year = movielens.load(movielens.MovieLensConfig(data_dir=movielens_dir, step_days=365),
                                rejects_path=os.devnull)
    assert by_year.day.max() >= 20
    # Weeks give over a thousand partitions of about 90 ratings: refused, with the way out.
    with pytest.raises(ValueError, match=r"--step_days 7 gives 1,0\d\d log partitions .* --num_steps 15"):
        movielens.load(movielens.MovieLensConfig(data_dir=movielens_dir, step_days=7), rejects_path=os.devnull)


def test_written_data_passes_the_contract_readers(movielens_dir, tmp_path):
    layout = DataLayout(str(tmp_path / "data"))
    summary = movielens.run(movielens.MovieLensConfig(data_dir=movielens_dir, ratings_per_step=20_000), layout)
    corpus = corpus_io.read_corpus(layout.corpus)  # strict: any bad row would raise
    impressions = log_io.read_logs(layout)
    assert corpus.size == 9742 and impressions.size == summary["impressions"]
    assert layout.days() == [1, 2, 3, 4, 5, 6]
    # Cold start is real in this set: some items are first seen on every step.
    assert all(d["cold_start_share"] > 0 for d in summary["per_day"])


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ContractError, match="no such directory"):
        movielens.load(movielens.MovieLensConfig(data_dir=str(tmp_path / "absent")))
    (tmp_path / "ratings.csv").write_text("userId,movieId,timestamp\n1,1,5\n")
    with pytest.raises(ContractError, match=r"ratings.csv: missing columns \['rating'\]"):
        movielens.load(movielens.MovieLensConfig(data_dir=str(tmp_path)))
