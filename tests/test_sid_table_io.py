"""The SID table contract: its reader names each kind of problem."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data import sid_table_io
from pipeline.core import features as fk
from pipeline.core.contracts import ContractError


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
