"""The corpus contract: a good file round-trips; each kind of bad row is named, counted and kept aside."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data import corpus_io
from pipeline.core import features as fk
from pipeline.core.contracts import ContractError
from pipeline.core.records import Corpus


def _corpus(n=6, dim=4, seed=0) -> Corpus:
    rng = np.random.default_rng(seed)
    return Corpus(item_ids=np.array([f"item{i}" for i in range(n)], dtype=object),
                  embeddings=rng.standard_normal((n, dim)).astype(np.float32),
                  first_day=np.arange(n, dtype=np.int64) % 3)


def _write_rows(path, rows: dict) -> str:
    pq.write_table(pa.table(rows), path)
    return path


def _rows(corpus: Corpus) -> dict:
    return {fk.ITEM_ID: list(corpus.item_ids), fk.EMBEDDING: [list(map(float, e)) for e in corpus.embeddings],
            fk.FIRST_DAY: list(map(int, corpus.first_day))}


def _read_rejects(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_corpus_round_trip(tmp_path):
    corpus = _corpus()
    path = str(tmp_path / "corpus.parquet")
    corpus_io.write_corpus(path, corpus)
    back = corpus_io.read_corpus(path)
    np.testing.assert_array_equal(back.item_ids, corpus.item_ids)
    np.testing.assert_array_equal(back.embeddings, corpus.embeddings)
    np.testing.assert_array_equal(back.first_day, corpus.first_day)


@pytest.mark.parametrize("corrupt, field, words", [
    (lambda r: r[fk.EMBEDDING].__setitem__(3, r[fk.EMBEDDING][3][:2]), "embedding", "wrong dimension: 2 values, expected 4"),
    (lambda r: r[fk.EMBEDDING][3].__setitem__(1, float("nan")), "embedding", "non-finite"),
    (lambda r: r[fk.ITEM_ID].__setitem__(3, ""), "item_id", "missing or empty item id"),
    (lambda r: r[fk.ITEM_ID].__setitem__(3, None), "item_id", "missing or empty item id"),
    (lambda r: r[fk.FIRST_DAY].__setitem__(3, -2), "first_day", "negative"),
    (lambda r: r[fk.EMBEDDING].__setitem__(3, None), "embedding", "missing embedding"),
])
def test_bad_corpus_row_is_named_in_strict_mode_and_set_aside_otherwise(tmp_path, corrupt, field, words):
    rows = _rows(_corpus())
    corrupt(rows)
    path = _write_rows(str(tmp_path / "corpus.parquet"), rows)
    with pytest.raises(ContractError) as err:
        corpus_io.read_corpus(path, embedding_dim=4)
    assert f"{path}: row 3: field '{field}'" in str(err.value) and words in str(err.value)

    rejects = str(tmp_path / "rejects.jsonl")
    corpus = corpus_io.read_corpus(path, embedding_dim=4, rejects_path=rejects)
    assert corpus.size == 5 and "item3" not in set(corpus.item_ids) - {""}
    [line] = _read_rejects(rejects)
    assert line["row"] == 3 and line["field"] == field and words in line["reason"]
    assert line["source"] == path and "record" in line  # the row itself is kept, not lost


def test_duplicate_ids_keep_one_row_whatever_the_order(tmp_path):
    corpus = _corpus()
    rows = _rows(corpus)
    # item1 appears again with a later first_day, item2 again with the same first_day.
    rows[fk.ITEM_ID] += ["item1", "item2"]
    rows[fk.EMBEDDING] += [[9.0] * 4, [-9.0] * 4]
    rows[fk.FIRST_DAY] += [5, int(corpus.first_day[2])]
    kept = []
    for order in (np.arange(8), np.random.default_rng(1).permutation(8)):
        shuffled = {k: [v[i] for i in order] for k, v in rows.items()}
        path = _write_rows(str(tmp_path / "dup.parquet"), shuffled)
        with pytest.raises(ContractError, match="duplicate item id 'item"):
            corpus_io.read_corpus(path)
        rejects = str(tmp_path / "dup.jsonl")
        got = corpus_io.read_corpus(path, rejects_path=rejects)
        assert sorted(got.item_ids) == sorted(corpus.item_ids)
        assert len(_read_rejects(rejects)) == 2
        kept.append({i: e.tobytes() for i, e in zip(got.item_ids, got.embeddings)})
    assert kept[0] == kept[1]
    # The earliest first_day wins for item1.
    assert kept[0]["item1"] == corpus.embeddings[1].tobytes()


def test_missing_column_is_named(tmp_path):
    rows = _rows(_corpus())
    del rows[fk.FIRST_DAY]
    path = _write_rows(str(tmp_path / "c.parquet"), rows)
    with pytest.raises(ContractError, match=r"missing column 'first_day' \(expected int\)"):
        corpus_io.read_corpus(path)


def test_wrong_column_type_is_named(tmp_path):
    rows = _rows(_corpus())
    rows[fk.FIRST_DAY] = [str(d) for d in rows[fk.FIRST_DAY]]
    path = _write_rows(str(tmp_path / "c.parquet"), rows)
    with pytest.raises(ContractError, match="column 'first_day' has type string, expected int"):
        corpus_io.read_corpus(path)


def test_empty_corpus_files_are_named(tmp_path):
    zero_bytes = tmp_path / "zero.parquet"
    zero_bytes.write_bytes(b"")
    with pytest.raises(ContractError, match="zero.parquet: file is empty"):
        corpus_io.read_corpus(str(zero_bytes))
    no_rows = _write_rows(str(tmp_path / "norows.parquet"),
                          pa.table({fk.ITEM_ID: pa.array([], pa.string()),
                                    fk.EMBEDDING: pa.array([], pa.list_(pa.float32())),
                                    fk.FIRST_DAY: pa.array([], pa.int64())}).to_pydict())
    with pytest.raises(ContractError, match="norows.parquet: file is empty"):
        corpus_io.read_corpus(no_rows)
    with pytest.raises(ContractError, match="no such file"):
        corpus_io.read_corpus(str(tmp_path / "absent.parquet"))


def test_all_rows_bad_is_an_error_not_an_empty_corpus(tmp_path):
    rows = _rows(_corpus(n=2))
    rows[fk.EMBEDDING] = [[float("nan")] * 4] * 2
    path = _write_rows(str(tmp_path / "c.parquet"), rows)
    with pytest.raises(ContractError, match="no valid rows out of 2"):
        corpus_io.read_corpus(path, rejects_path=str(tmp_path / "r.jsonl"))
