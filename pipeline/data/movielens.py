"""MovieLens (ml-latest-small + content embeddings) turned into the corpus and log contracts.

Each rating is an impression of the rated movie: click = rating >= 4, engagement = rating / 5.
The watch item is the user's previous rated movie and the history their earlier rated movies,
most recent first. Calendar days are sparse in this set (22 years), so time steps by equal counts of
ratings (15 steps by default), or by calendar days or a fixed number of ratings on request. A user's
first rating has no watch item and is written aside.
"""

import dataclasses
import logging

import numpy as np
import pandas as pd

from pipeline.data import corpus_io
from pipeline.data import log_io
from pipeline.data import log_summary
from pipeline.data.interactions import ENV_VAR, MAX_STEPS, MovieLensConfig, default_dir  # noqa: F401
from pipeline.core import features as fk
from pipeline.core import files
from pipeline.core.contracts import ContractError, Rejection, RejectSink
from pipeline.core.records import Corpus, Impressions
from pipeline.core.layout import DataLayout

_SECONDS_PER_DAY = 86_400


def _read_csv(path: str, columns: dict[str, str]) -> pd.DataFrame:
    if not files.exists(path):
        raise ContractError(f"{path}: no such file")
    try:
        with files.open_file(path, "rb") as f:
            frame = pd.read_csv(f)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise ContractError(f"{path}: not a readable CSV file ({e})") from e
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ContractError(f"{path}: missing columns {missing}; columns present: {list(frame.columns)}")
    if frame.empty:
        raise ContractError(f"{path}: file is empty (no rows)")
    for column, kind in columns.items():
        if kind and not pd.api.types.is_numeric_dtype(frame[column]):
            raise ContractError(f"{path}: column '{column}' has dtype {frame[column].dtype}, expected {kind}")
    return frame


def _read_embeddings(data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    ids_path = files.join(data_dir, "item_ids.txt")
    emb_path = files.join(data_dir, "item_embeddings.npy")
    for path in (ids_path, emb_path):
        if not files.exists(path):
            raise ContractError(f"{path}: no such file")
    ids = np.array([line.strip() for line in files.read_text(ids_path).splitlines() if line.strip()], dtype=object)
    embeddings = files.load_npy(emb_path).astype(np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(ids):
        raise ContractError(f"{emb_path}: shape {embeddings.shape}, expected [{len(ids)}, D] "
                            f"(one row per line of {ids_path})")
    return ids, embeddings


def _steps(ratings: pd.DataFrame, config: MovieLensConfig) -> np.ndarray:
    """Time step (>= 1) of each rating, rows already in time order.

    Raises:
      ValueError: a choice that gives more than MAX_STEPS partitions (one `model.fit` each).
    """
    n = len(ratings)
    if config.ratings_per_step:
        steps = np.arange(n) // config.ratings_per_step + 1
    elif config.step_days:
        seconds = ratings["timestamp"].to_numpy()
        steps = (seconds - seconds.min()) // (config.step_days * _SECONDS_PER_DAY) + 1
    else:
        steps = np.arange(n) * config.num_steps // n + 1
    partitions = len(np.unique(steps))
    if partitions > MAX_STEPS:
        choice = f"--step_days {config.step_days}" if config.step_days else f"--ratings_per_step {config.ratings_per_step}"
        raise ValueError(f"{choice} gives {partitions:,} log partitions of about {n // partitions:,} ratings each, and "
                         f"`sidrec train` fits once per partition; use at most {MAX_STEPS} (the default "
                         f"--num_steps {MovieLensConfig.num_steps} splits the ratings into equal steps)")
    return steps


def load(config: MovieLensConfig, rejects_path: str | None = None) -> tuple[Corpus, Impressions]:
    """Builds the corpus and the impressions (with a `day` per step) from the MovieLens files.

    Raises:
      ContractError: if a file is missing or malformed, or a rating cannot be used in strict mode.
    """
    data_dir = config.resolved_dir
    if not files.isdir(data_dir):
        raise ContractError(f"{data_dir}: no such directory (set --data_dir or ${ENV_VAR})")
    ratings_path = files.join(data_dir, "ratings.csv")
    ratings = _read_csv(ratings_path, {"userId": "int", "movieId": "int", "rating": "float",
                                       "timestamp": "int"})
    movies = _read_csv(files.join(data_dir, "movies.csv"), {"movieId": "int", "title": ""})
    item_ids, embeddings = _read_embeddings(data_dir)

    ratings = ratings.reset_index(names="source_row")
    ratings = ratings.sort_values(["timestamp", "userId", "movieId"], kind="stable").reset_index(drop=True)
    ratings["step"] = _steps(ratings, config)
    ratings["item_id"] = ratings["movieId"].astype(str)

    # Per user, in time order: the previous rating is the watch item, earlier ones the history.
    ratings = ratings.sort_values(["userId", "timestamp", "movieId"], kind="stable").reset_index(drop=True)
    user = ratings["userId"].to_numpy()
    is_first = np.concatenate([[True], user[1:] != user[:-1]])
    user_start = np.maximum.accumulate(np.where(is_first, np.arange(len(user)), 0))
    position = np.arange(len(user)) - user_start
    movie = ratings["item_id"].to_numpy(dtype=object)
    has_embedding = ratings["item_id"].isin(set(item_ids)).to_numpy()

    with RejectSink(rejects_path) as sink:
        for row in np.flatnonzero(~has_embedding | is_first):
            reason = ("no content embedding for this movie in item_embeddings.npy" if not has_embedding[row]
                      else "the user's first rating: no previous movie to be the watch item")
            field = "movieId" if not has_embedding[row] else fk.WATCH_ITEM_ID
            record = ratings.loc[row, ["userId", "movieId", "rating", "timestamp"]].to_dict()
            sink.reject(Rejection(ratings_path, int(ratings.loc[row, "source_row"]), field, reason), record)
    keep = has_embedding & ~is_first

    h = config.max_history
    j = np.arange(h)[None, :]
    lengths = np.minimum(position, h)
    back = np.arange(len(user))[:, None] - 1 - j
    in_history = j < lengths[:, None]
    history_values = movie[back[keep][in_history[keep]]]
    rating = ratings["rating"].to_numpy()
    impressions = Impressions(
        user_id=ratings["userId"].astype(str).to_numpy(dtype=object)[keep],
        watch_item_id=movie[np.maximum(np.arange(len(user)) - 1, 0)][keep],
        candidate_item_id=movie[keep],
        history_values=history_values,
        history_lengths=lengths[keep].astype(np.int64),
        click=(rating >= config.click_threshold).astype(np.int64)[keep],
        engagement=(rating / 5.0).astype(np.float32)[keep],
        day=ratings["step"].to_numpy().astype(np.int64)[keep])

    first_step = ratings[has_embedding].groupby("item_id")["step"].min()
    never_rated = int(ratings["step"].max()) + 1  # not impressed yet: "arrives" after the logs
    titles = movies.assign(item_id=movies["movieId"].astype(str)).set_index("item_id")["title"]
    corpus = Corpus(item_ids=item_ids, embeddings=embeddings,
                    first_day=first_step.reindex(item_ids).fillna(never_rated).to_numpy().astype(np.int64),
                    titles=titles.reindex(item_ids).fillna("").to_numpy(dtype=object))
    return corpus, impressions


def run(config: MovieLensConfig, layout: DataLayout) -> dict:
    """Loads MovieLens and writes it under layout.root in the project's contracts."""
    corpus, impressions = load(config, rejects_path=layout.rejects_file("movielens_ratings"))
    corpus_io.write_corpus(layout.corpus, corpus)
    days = np.unique(impressions.day)
    for day in days:
        log_io.write_day(layout, int(day), impressions.select(impressions.day == day))
    logging.info("wrote %d items and %d impressions over %d steps to %s", corpus.size, impressions.size,
                 len(days), layout.root)
    summary = log_summary.summarise(impressions, corpus)
    summary["movielens_config"] = dataclasses.asdict(config) | {"data_dir": config.resolved_dir}
    files.write_json(layout.summary, summary)
    return summary
