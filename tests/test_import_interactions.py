"""`sidrec import`: a flat interactions table into the log contract, by hand and against the MovieLens loader
(whose preset, `sidrec movielens`, runs from a fresh shell as docs/contracts.md writes it, after the page's
`sidrec validate` commands)."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_jobs import import_interactions as imp
from pipeline import cli
from pipeline.core.layout import DataLayout
from pipeline.data import corpus_io, log_io, movielens
from pipeline.data.interactions import Steps
from doc_blocks import Tour
from worlds import IN_MEMORY

# Three users; times in Europe/Paris (UTC+1 in January): u1's 23:30 UTC on Jan 1 is Jan 2 there.
CSV = """uid;vid;ts;clicked;frac
u1;a;2024-01-01T10:00:00Z;1;0.5
u1;b;2024-01-01T23:30:00Z;0;0.0
u1;c;2024-01-02T09:00:00Z;1;0.9
u2;b;2024-01-01T08:00:00Z;0;0.0
u2;a;2024-01-01T09:00:00Z;1;0.7
u2;c;2024-01-02T12:00:00Z;1;1.0
u2;z;2024-01-02T13:00:00Z;1;0.2
u3;a;not a time;1;0.3
u3;;2024-01-02T10:00:00Z;1;0.3
u3;b;2024-01-02T10:00:00Z;2;0.3
"""
COLUMNS = "user=uid,item=vid,time=ts,click=clicked,engagement=frac"


def _items(tmp_path) -> str:
    """Items a, b, c with embeddings; d's embedding is not finite (written aside, not in the corpus)."""
    path = str(tmp_path / "items.parquet")
    pq.write_table(pa.table({"id": ["a", "b", "c", "d"], "vec": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [np.nan, 1.0]]}),
                   path)
    return path


def _config(tmp_path, source: str, **overrides) -> imp.ImportConfig:
    return imp.ImportConfig(**{"interactions": source, "columns": COLUMNS, "output": str(tmp_path / "data"),
                               "delimiter": ";", "day_mode": "calendar", "timezone": "Europe/Paris",
                               "items": _items(tmp_path), "item_columns": "item=id,embedding=vec",
                               "shards_per_day": 2, **overrides})


def _rows(data_dir: str) -> dict[int, list[tuple]]:
    layout = DataLayout(data_dir)
    out = {}
    for day in layout.days():
        logs = log_io.read_logs(layout, days=[day])
        out[day] = sorted((logs.user_id[r], logs.watch_item_id[r], logs.candidate_item_id[r], tuple(logs.history(r)),
                           int(logs.click[r]), round(float(logs.engagement[r]), 6)) for r in range(logs.size))
    return out


def test_a_csv_table_by_hand(tmp_path):
    source = tmp_path / "events.csv"
    source.write_text(CSV)
    result = imp.run(_config(tmp_path, str(source)), IN_MEMORY)
    # Paris days: Jan 1 is day 1; Jan 2 (u1's 23:30 UTC included) is day 2. Consumed = clicked.
    # u1: a (first: no watch), b (watch a; not clicked: stays a negative), c (watch a, history [a]).
    # u2: b (nothing consumed yet), a (nothing consumed yet: b was not clicked), c (watch a), z (no embedding).
    # Day 1 has no impression left (its rows had no watch item yet), so it has no partition.
    assert _rows(result["output"]) == {
        2: [("u1", "a", "b", ("a",), 0, 0.0), ("u1", "a", "c", ("a",), 1, 0.9), ("u2", "a", "c", ("a",), 1, 1.0)]}
    counters = result["counters"]
    assert counters["rows_read"] == 10 and counters["rows_rejected"] == 7
    assert (counters["rejected_ts"], counters["rejected_vid"], counters["rejected_clicked"]) == (1, 1, 1)
    assert (counters["rejected_watch_item_id"], counters["rejected_item"], counters["items_rejected"]) == (3, 1, 1)
    rejects = [json.loads(line) for name in os.listdir(DataLayout(result["output"]).rejects)
               for line in open(os.path.join(DataLayout(result["output"]).rejects, name))]
    assert any(r["row"] == 8 and r["field"] == "ts" and "ISO-8601" in r["reason"] for r in rejects)
    corpus = corpus_io.read_corpus(DataLayout(result["output"]).corpus)
    # First days: the day of each item's first interaction (a, b on Jan 1; c on Jan 2).
    assert dict(zip(corpus.item_ids, corpus.first_day.tolist())) == {"a": 1, "b": 1, "c": 2}
    summary = result["summary"]
    assert summary["impressions"] == 3 and summary["items"] == 3


def test_parquet_and_json_lines_give_what_csv_gives(tmp_path):
    source = tmp_path / "events.csv"
    source.write_text(CSV)
    expected = _rows(imp.run(_config(tmp_path, str(source)), IN_MEMORY)["output"])
    lines = [line.split(";") for line in CSV.strip().splitlines()]
    records = [dict(zip(lines[0], row)) for row in lines[1:]]
    for row in records:
        for key, kind in (("clicked", int), ("frac", float)):
            row[key] = kind(row[key]) if row[key] not in ("", "2") else (2 if row[key] == "2" else None)
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    pq.write_table(pa.Table.from_pylist(records), str(tmp_path / "events.parquet"))
    for name in ("events.jsonl", "events.parquet"):
        out = tmp_path / name.replace(".", "_")
        result = imp.run(_config(tmp_path, str(tmp_path / name), output=str(out)), IN_MEMORY)
        assert _rows(result["output"]) == expected, name


CONTRACTS = "docs/contracts.md"


@pytest.fixture(scope="module")
def contracts_tour(tmp_path_factory, movielens_dir):
    """docs/contracts.md from fresh shells: validate a data directory (lenient, then strict), then import the
    MovieLens files (the page's path is where they are here)."""
    tour = Tour("contracts", tmp_path_factory.mktemp("contracts"),
                paths={"/path/to/movielens-latest-small": movielens_dir})
    tour.run("sidrec simulate --run_dir runs/mine")  # given: data in the contracts under runs/mine/data
    validate, imported = tour.run_page(CONTRACTS)
    return {"tour": tour, "validate": validate, "movielens": imported,
            "output": os.path.join(tour.workdir, "runs", "movielens", "data")}


def test_the_contracts_page_validates_and_imports(contracts_tour):
    assert contracts_tour["validate"].count("10,500 impressions") == 2  # 7 tiny days of 1,500, both ways
    assert "corpus: runs/movielens/data/corpus.parquet" in contracts_tour["movielens"]
    assert contracts_tour["tour"].stderr == []


def test_the_movielens_preset_gives_what_the_movielens_loader_gives(contracts_tour, movielens_dir, tmp_path):
    config = movielens.MovieLensConfig(data_dir=movielens_dir)
    corpus, impressions = movielens.load(config, rejects_path=str(tmp_path / "rejects.jsonl"))
    with open(DataLayout(contracts_tour["output"]).summary) as f:
        result = {"output": contracts_tour["output"], "counters": json.load(f)["counters"]}
    imported = corpus_io.read_corpus(DataLayout(result["output"]).corpus)
    assert imported.item_ids.tolist() == corpus.item_ids.tolist()
    np.testing.assert_array_equal(imported.embeddings, corpus.embeddings)
    np.testing.assert_array_equal(imported.first_day, corpus.first_day)
    assert imported.titles.tolist() == corpus.titles.tolist()
    rows = _rows(result["output"])
    assert sorted(rows) == sorted(np.unique(impressions.day).tolist())
    for day, got in rows.items():
        part = impressions.select(impressions.day == day)
        assert got == sorted((part.user_id[r], part.watch_item_id[r], part.candidate_item_id[r],
                              tuple(part.history(r)), int(part.click[r]), round(float(part.engagement[r]), 6))
                             for r in range(part.size)), day
    assert result["counters"]["rows_rejected"] == result["counters"]["rows_read"] - impressions.size


def test_too_many_days_and_bad_flags_are_refused(tmp_path):
    source = tmp_path / "events.csv"
    source.write_text(CSV)
    with pytest.raises(ValueError, match="--rows_per_step 1 gives 101 log partitions .* use at most 100"):
        Steps("rows", rows_per_step=1).check_count(101, 101)
    with pytest.raises(ValueError, match="--columns needs user, item, time and click or rating"):
        imp.ImportConfig(interactions="x", columns="user=u,item=i", output="o", items="i.parquet")
    with pytest.raises(ValueError, match="--items .Parquet. or as --item_ids and --embeddings"):
        imp.ImportConfig(interactions="x", columns=COLUMNS, output="o")
    assert cli.main(["import", "--run_dir", str(tmp_path / "run"), "--interactions", str(source), "--columns", COLUMNS,
                     "--delimiter", ";", "--items", _items(tmp_path), "--item_columns", "item=id,embedding=vec",
                     "--timezone", "Mars/Olympus", *IN_MEMORY]) == 2


def test_a_table_whose_rows_all_fail_says_why(tmp_path):
    source = tmp_path / "events.csv"
    source.write_text("uid;vid;ts;clicked;frac\nu1;a;yesterday;1;0.5\nu2;b;today;0;0.0\n")
    with pytest.raises(ValueError, match=r"no usable row; rejected by column: \{'ts': 2\}"):
        imp.run(_config(tmp_path, str(source)), IN_MEMORY)
    assert not os.path.exists(tmp_path / "data")  # nothing half-written
