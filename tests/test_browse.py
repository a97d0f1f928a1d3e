"""`sidrec browse`: the sub-trie under a SID prefix, by hand and through the CLI."""

import numpy as np

from pipeline import cli
from pipeline.data import sid_table_io
from pipeline.stages import browse


def test_subtrie_by_hand():
    ids = np.array(["a", "b", "c", "d", "e"], dtype=object)
    sids = np.array([[1, 2, 0], [1, 3, 1], [0, 2, 2], [1, 2, 1], [1, 3, 0]])
    found = browse.subtrie(ids, sids, (1,))
    assert ids[found["rows"]].tolist() == ["a", "d", "e", "b"]  # sorted by SID
    assert found["children"] == {2: 2, 3: 2}
    leaf = browse.subtrie(ids, sids, (1, 2, 1))
    assert ids[leaf["rows"]].tolist() == ["d"] and leaf["children"] == {}
    assert browse.subtrie(ids, sids, ())["children"] == {0: 1, 1: 4}


def test_cli_lists_a_prefix_of_the_run(run_dir, capsys):
    table = sid_table_io.read_sid_table(f"{run_dir.sids}/table")
    first = int(table.sids[0, 0])
    assert cli.main(["browse", "--run_dir", run_dir.root, "--prefix", str(first), "--limit", "3"]) == 0
    out = capsys.readouterr().out
    size = int((table.sids[:, 0] == first).sum())
    assert out.startswith(f"prefix {first}: {size:,} items") and f"... {size - 3:,} more" in out
    assert cli.main(["browse", "--run_dir", run_dir.root, "--prefix", "1,2,3,4,5,6"]) == 2
    assert "longer than the SIDs" in capsys.readouterr().err
