"""The sidrec command line, run as a user would (in-process and as the installed console script)."""

import json
import os
import subprocess
import sys

from pipeline import cli
from pipeline.data import corpus_io
from pipeline.data import log_io
from pipeline.core.layout import RunLayout

SMALL_FLAGS = ["--num_items", "2000", "--num_users", "300", "--num_days", "3",
               "--impressions_per_day", "3000", "--embedding_dim", "32"]


def test_help_lists_the_stages():
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "sidrec"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    for command in ("demo", "simulate", "movielens", "validate"):
        assert command in out


def test_simulate_writes_the_contracts_and_prints_the_summary(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    assert cli.main(["simulate", "--run_dir", run_dir, *SMALL_FLAGS]) == 0
    out = capsys.readouterr().out
    assert "oracle AUC" in out and "2,000 items (D=32)" in out and "3 days" in out
    layout = RunLayout(run_dir).data
    assert layout.days() == [1, 2, 3]
    corpus = corpus_io.read_corpus(layout.corpus)
    impressions = log_io.read_logs(layout)
    assert corpus.size == 2000 and corpus.dim == 32 and impressions.size == 9000
    with open(layout.summary) as f:
        summary = json.load(f)
    assert [d["impressions"] for d in summary["per_day"]] == [3000] * 3
    assert summary["simulator_config"]["embedding_dim"] == 32
    with open(os.path.join(RunLayout(run_dir).report, "simulated_logs.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # The validate command reads the same files back and agrees.
    assert cli.main(["validate", "--data_dir", layout.root, "--strict"]) == 0
    assert "9,000 impressions" in capsys.readouterr().out


def test_bad_flags_give_a_clear_error(tmp_path, capsys):
    code = cli.main(["simulate", "--run_dir", str(tmp_path), "--fresh_share", "1.5"])
    assert code == 2
    assert "fresh_share must be in (0, 1), got 1.5" in capsys.readouterr().err
    code = cli.main(["validate", "--data_dir", str(tmp_path / "nothing")])
    assert code == 2
    assert "no such file" in capsys.readouterr().err


def test_a_missing_stage_output_is_one_line_naming_the_command_that_makes_it(tmp_path, capsys):
    run_dir = str(tmp_path / "empty")
    for argv, command in ((["train"], "`sidrec transform`"), (["materialize"], "`sidrec train-rqvae`"),
                          (["lookups"], "`sidrec simulate`"), (["train-rqvae"], "`sidrec simulate`")):
        assert cli.main([*argv, "--run_dir", run_dir]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and command in err and err.startswith(f"sidrec {argv[0]}: error: "), err


def test_a_bad_flag_value_is_one_line(tmp_path, capsys):
    assert cli.main(["transform", "--run_dir", str(tmp_path), "--kind", "sid_trigram"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("kind must be one of random_hash, dense, sid_ngram, sid_spm, sid_prefix, "
                                           "sid_ngram+id, sid_spm+id, sid_prefix+id, got 'sid_trigram'") in err
