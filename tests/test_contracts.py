"""Data contracts: good files round-trip; each kind of bad input is named, counted and kept aside."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from pipeline.data import corpus_io
from pipeline.data import log_io
from pipeline.data import sid_table_io
from pipeline.core import features as fk
from pipeline.core.contracts import ContractError
from pipeline.core.records import Corpus, Impressions
from pipeline.core.layout import DataLayout


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


# ------------------------------------------------------------------------------------------ logs

def _impressions(n=5, day=3) -> Impressions:
    lengths = np.arange(n) % 3
    return Impressions(
        user_id=np.array([f"u{i}" for i in range(n)], dtype=object),
        watch_item_id=np.array([f"w{i}" for i in range(n)], dtype=object),
        candidate_item_id=np.array([f"c{i}" for i in range(n)], dtype=object),
        history_values=np.array([f"h{i}" for i in range(lengths.sum())], dtype=object),
        history_lengths=lengths.astype(np.int64), click=np.arange(n) % 2,
        engagement=np.linspace(0, 1, n).astype(np.float32), day=np.full(n, day))


def test_logs_round_trip(tmp_path):
    layout = DataLayout(str(tmp_path))
    written = _impressions()
    log_io.write_day(layout, 3, written)
    assert layout.days() == [3]
    back = log_io.read_logs(layout)
    for name in ("user_id", "watch_item_id", "candidate_item_id", "history_values", "history_lengths",
                 "click", "day"):
        np.testing.assert_array_equal(getattr(back, name), getattr(written, name), err_msg=name)
    np.testing.assert_allclose(back.engagement, written.engagement)
    assert back.history(2) == ["h1", "h2"]


def _example(**features) -> bytes:
    feature = {}
    for key, value in features.items():
        values = value if isinstance(value, list) else [value]
        if values and isinstance(values[0], str):
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))
        elif values and isinstance(values[0], float):
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        elif values:
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


GOOD = {fk.USER_ID: "u", fk.WATCH_ITEM_ID: "w", fk.CANDIDATE_ITEM_ID: "c", fk.HISTORY_ITEM_IDS: ["a", "b"],
        fk.CLICK: 1, fk.ENGAGEMENT: 0.5, fk.DAY: 3}


@pytest.mark.parametrize("change, field, words", [
    ({fk.CLICK: 2}, "click", "value 2, expected 0 or 1"),
    ({fk.ENGAGEMENT: 1.5}, "engagement", "expected a finite float in [0, 1]"),
    ({fk.ENGAGEMENT: float("nan")}, "engagement", "expected a finite float in [0, 1]"),
    ({fk.DAY: 4}, "day", "day 4 in the partition of day 3"),
    ({fk.CANDIDATE_ITEM_ID: ""}, "candidate_item_id", "missing or empty"),
    ({fk.HISTORY_ITEM_IDS: [f"h{i}" for i in range(25)]}, "history_item_ids", "25 items, expected at most 20"),
    ({fk.CLICK: [1, 0]}, "click", "expected exactly one int value"),
])
def test_bad_log_row_is_named_and_set_aside(tmp_path, change, field, words):
    layout = DataLayout(str(tmp_path))
    rows = [_example(**GOOD), _example(**GOOD), _example(**{**GOOD, **change})]
    log_io.write_tfrecord(layout.day_file(3), rows)
    with pytest.raises(ContractError) as err:
        log_io.read_logs(layout)
    assert f"row 2: field '{field}'" in str(err.value) and words in str(err.value)
    assert layout.day_file(3) in str(err.value)

    rejects = str(tmp_path / "rejects.jsonl")
    kept = log_io.read_logs(layout, rejects_path=rejects)
    assert kept.size == 2
    [line] = _read_rejects(rejects)
    assert line["row"] == 2 and line["field"] == field
    assert "serialized_example_base64" in line["record"]


def test_log_missing_feature_and_empty_file_are_named(tmp_path):
    layout = DataLayout(str(tmp_path))
    no_click = {k: v for k, v in GOOD.items() if k != fk.CLICK}
    log_io.write_tfrecord(layout.day_file(3), [_example(**no_click)] * 2)
    with pytest.raises(ContractError, match=r"missing column 'click' \(expected int\)"):
        log_io.read_logs(layout)
    log_io.write_tfrecord(layout.day_file(3), [])
    with pytest.raises(ContractError, match="file is empty"):
        log_io.read_logs(layout)
    with pytest.raises(ContractError, match="no partition for days \\[7\\]"):
        log_io.read_logs(layout, days=[7])


def test_wrong_feature_type_in_logs_is_named(tmp_path):
    layout = DataLayout(str(tmp_path))
    log_io.write_tfrecord(layout.day_file(3), [_example(**{**GOOD, fk.CLICK: 1.0})])
    with pytest.raises(ContractError, match="column 'click' has type .*float.*, expected int"):
        log_io.read_logs(layout)


def test_corrupt_tfrecord_is_named(tmp_path):
    layout = DataLayout(str(tmp_path))
    os.makedirs(layout.day_dir(3))
    with open(layout.day_file(3), "wb") as f:
        f.write(b"not a gzip tfrecord")
    with pytest.raises(ContractError, match="corrupt or truncated"):
        log_io.read_logs(layout)


# ------------------------------------------------------------------------------------- SID table

def _sid_table(path, ids, sids, versions):
    pq.write_table(pa.table({fk.ITEM_ID: ids, fk.SID: sids, fk.RQVAE_VERSION: versions}), str(path))


def test_sid_table_reads_and_names_its_problems(tmp_path):
    _sid_table(tmp_path / "a.parquet", ["x", "y"], [[1, 2], [3, 4]], ["1-abc", "1-abc"])
    table = sid_table_io.read_sid_table(str(tmp_path), codebook_size=8)
    assert table.rqvae_version == "1-abc" and table.lookup()["y"].tolist() == [3, 4]
    with pytest.raises(ContractError, match=r"codes \[3, 4\] outside \[0, 4\)"):
        sid_table_io.read_sid_table(str(tmp_path), codebook_size=4)
    _sid_table(tmp_path / "b.parquet", ["x"], [[5, 6]], ["1-abc"])
    with pytest.raises(ContractError, match="item id 'x' appears 2 times"):
        sid_table_io.read_sid_table(str(tmp_path))
    (tmp_path / "b.parquet").unlink()
    _sid_table(tmp_path / "c.parquet", ["z"], [[5, 6]], ["2-def"])
    with pytest.raises(ContractError, match="several RQ-VAE versions"):
        sid_table_io.read_sid_table(str(tmp_path))
    (tmp_path / "c.parquet").unlink()
    _sid_table(tmp_path / "d.parquet", ["z", "w"], [[5, 6], [7]], ["1-abc", "1-abc"])
    with pytest.raises(ContractError, match="d.parquet: row 1: field 'sid': 1 codes, expected 2"):
        sid_table_io.read_sid_table(str(tmp_path))
    with pytest.raises(ContractError, match="no SID table files"):
        sid_table_io.read_sid_table(str(tmp_path / "nothing"))
