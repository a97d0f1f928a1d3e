"""The log contract: good days round-trip; each kind of bad row or file is named, counted and kept aside."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from pipeline.data import log_io
from pipeline.core import features as fk
from pipeline.core.contracts import ContractError
from pipeline.core.records import Impressions
from pipeline.core.layout import DataLayout


def _read_rejects(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _impressions(n=5, day=3) -> Impressions:
    lengths = np.arange(n) % 3
    return Impressions(
        user_id=np.array([f"u{i}" for i in range(n)], dtype=object),
        watch_item_id=np.array([f"w{i}" for i in range(n)], dtype=object),
        candidate_item_id=np.array([f"c{i}" for i in range(n)], dtype=object),
        history_values=np.array([f"h{i}" for i in range(lengths.sum())], dtype=object),
        history_lengths=lengths.astype(np.int64), click=np.arange(n) % 2,
        engagement=np.linspace(0, 1, n).astype(np.float32), day=np.full(n, day))


@pytest.mark.parametrize("batch_rows", [8192, 2])  # one batch, and batches that split the day (and histories)
def test_logs_round_trip(tmp_path, batch_rows):
    layout = DataLayout(str(tmp_path))
    written = _impressions()
    log_io.write_day(layout, 3, written, batch_rows=batch_rows)
    assert layout.days() == [3]
    back = log_io.read_logs(layout)
    for name in ("user_id", "watch_item_id", "candidate_item_id", "history_values", "history_lengths",
                 "click", "day"):
        np.testing.assert_array_equal(getattr(back, name), getattr(written, name), err_msg=name)
    np.testing.assert_allclose(back.engagement, written.engagement)
    assert back.history(2) == ["h1", "h2"]


def test_equal_impressions_give_equal_bytes(tmp_path):
    """Features are written in name order, so a rewrite of the same day is byte-identical."""
    paths = []
    for name in ("a", "b"):
        paths.append(log_io.write_day(DataLayout(str(tmp_path / name)), 3, _impressions()))
    records = [[r.numpy() for r in tf.data.TFRecordDataset(p, compression_type="GZIP")] for p in paths]
    assert records[0] == records[1]
    for record in records[0]:  # each is already in protobuf's deterministic (sorted-map) form
        assert tf.train.Example.FromString(record).SerializeToString(deterministic=True) == record


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
