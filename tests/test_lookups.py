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
    assert os.path.getsize(os.path.join(run_dir.report, "lookups_per_item.png")) > 10_000
