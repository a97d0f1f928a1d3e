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
