"""The row rules and the duplicate-id rule, by hand (the readers and the Beam jobs all call these)."""

import numpy as np
import pyarrow as pa
import pytest

from pipeline.core import features as fk
from pipeline.core import row_rules
from pipeline.core.contracts import ContractError


def test_duplicate_rule_keeps_the_earliest_first_day_then_the_smallest_digest_in_any_order():
    keys = [(3, "aa"), (1, "ff"), (1, "bb"), (1, "bb")]
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
        kept, reasons = row_rules.resolve_duplicates("x", [keys[i] for i in order])
        assert [keys[i] for i in order][kept] == (1, "bb") and len(reasons) == 3
    _, reasons = row_rules.resolve_duplicates("x", keys)
    assert reasons[3] == "duplicate item id 'x': an identical row was kept"
    assert reasons[0].startswith("duplicate item id 'x': kept the row with first_day 1 and embedding digest bb")


def test_duplicate_key_is_the_digest_of_the_float32_bytes():
    a = row_rules.duplicate_key(2, np.array([1.0, 2.0], np.float64))
    assert a == row_rules.duplicate_key(2, np.array([1.0, 2.0], np.float32)) and a[0] == 2 and len(a[1]) == 40


def test_corpus_rows_first_failure_per_row():
    table = pa.table({fk.ITEM_ID: ["a", None, "c", "d"], fk.EMBEDDING: [[1.0, 2.0], [1.0, 2.0], [float("nan"), 0.0], None],
                      fk.FIRST_DAY: [0, 0, -1, 1]})
    checked = row_rules.check_corpus_rows(table, "c.parquet", embedding_dim=2)
    assert checked.ok.tolist() == [True, False, False, False]
    assert {row: field for row, (field, _) in checked.failures.items()} == {1: fk.ITEM_ID, 2: fk.EMBEDDING,
                                                                           3: fk.EMBEDDING}
    assert checked.record(2)[fk.FIRST_DAY] == -1 and checked.embeddings[0].tolist() == [1.0, 2.0]
    with pytest.raises(ContractError, match="missing column 'first_day'"):
        row_rules.check_corpus_rows(table.drop([fk.FIRST_DAY]), "c.parquet")


def _log_batch(users, watches, candidates, histories):
    """A decoded log batch built by hand (ids as bytes, so a test can give bytes that are not UTF-8)."""
    from pipeline.core.arrow_lists import list_array, scalar_list_array

    binary, n = pa.large_binary(), len(users)
    columns = {fk.USER_ID: scalar_list_array(np.array(users, dtype=object), binary),
               fk.WATCH_ITEM_ID: scalar_list_array(np.array(watches, dtype=object), binary),
               fk.CANDIDATE_ITEM_ID: scalar_list_array(np.array(candidates, dtype=object), binary),
               fk.HISTORY_ITEM_IDS: list_array(np.array([i for h in histories for i in h], dtype=object),
                                               np.array([len(h) for h in histories]), binary),
               fk.CLICK: scalar_list_array(np.zeros(n, np.int64), pa.int64()),
               fk.ENGAGEMENT: scalar_list_array(np.zeros(n, np.float32), pa.float32()),
               fk.DAY: scalar_list_array(np.full(n, 4, np.int64), pa.int64())}
    return pa.RecordBatch.from_arrays(list(columns.values()), list(columns))


def test_log_ids_are_checked_without_decoding_and_bad_utf8_is_a_row_failure():
    batch = _log_batch([b"u1", b"u2", b"u3", b"u4", b"u5"], [b"w", b"w", b"w", b"", b"w"],
                       [b"c", b"\xff\xfe", b"c", b"c", "caf\u00e9".encode()],
                       [[b"a", b"b"], [], [b"a", b"\xc3"], [b"a"], [b""]])
    checked = row_rules.check_log_batch(batch, "day4.tfrecord", 4, max_history=20)
    assert checked.ok.tolist() == [True, False, False, False, False]
    assert checked.failures == {1: (fk.CANDIDATE_ITEM_ID, "not valid UTF-8"),
                                2: (fk.HISTORY_ITEM_IDS, "contains an item id that is not valid UTF-8"),
                                3: (fk.WATCH_ITEM_ID, "missing or empty item/user id"),
                                4: (fk.HISTORY_ITEM_IDS, "contains an empty item id")}
    impressions = checked.impressions  # built on first use, as Python strings
    assert list(impressions.user_id) == ["u1"] and list(impressions.history_values) == ["a", "b"]
    assert impressions.history_lengths.tolist() == [2]
    valid = row_rules.check_log_batch(_log_batch([b"u"], [b"w"], ["caf\u00e9".encode()], [[]]), "f", 4, 20)
    assert valid.ok.all() and list(valid.impressions.candidate_item_id) == ["caf\u00e9"]
