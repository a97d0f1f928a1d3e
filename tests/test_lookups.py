"""`sidrec lookups`: lookups per item by popularity for every representation (the paper's Figure 4)."""

import json
import os

from pipeline import cli


def test_cli_lookups_sweeps_the_representations(run_dir, capsys):
    assert cli.main(["lookups", "--run_dir", run_dir.root, "--vocab_sizes", "100,200,100000"]) == 0
    out = capsys.readouterr().out
    assert "sid_1gram" in out and "sid_2gram" in out and "sid_spm_200" in out
    assert "vocab_size 100000 is more than" in out  # refused with the reason, not dropped
    with open(os.path.join(run_dir.metrics, "lookups.json")) as f:
        rows = {r["representation"]: r for r in json.load(f)}
    assert rows["sid_2gram"]["head"]["mean_lookups_per_item"] == 2
    assert rows["sid_spm_200"]["head"]["mean_lookups_per_item"] <= rows["sid_spm_200"]["tail"]["mean_lookups_per_item"]
    # Beyond the paper: a prefix piece per length, one more with an ID table; SPM dropout in training splits pieces.
    assert rows["sid_prefix_8192"]["mean_lookups_per_item"] == 4
    assert rows["sid_prefix_8192+id_1024"]["mean_lookups_per_item"] == 5
    spm, dropped = rows["sid_spm_200"], rows["sid_spm_200 (training, dropout 0.1)"]
    assert rows["sid_spm_200+id_1024"]["mean_lookups_per_item"] == spm["mean_lookups_per_item"] + 1
    # Each piece counts 1, or with p = 0.1 its split's length (at most L = 4 pieces).
    assert spm["mean_lookups_per_item"] < dropped["mean_lookups_per_item"] <= (1 + 0.1 * 3) * spm["mean_lookups_per_item"]
    assert os.path.getsize(os.path.join(run_dir.report, "lookups_per_item.png")) > 10_000
