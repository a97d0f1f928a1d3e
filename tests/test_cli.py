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


def test_the_parser_is_built_without_tensorflow():
    """`sidrec --help` and `sidrec CMD --help` answer at once: every command's flags come from configs that import
    neither TensorFlow nor Beam (a fresh interpreter, as the console script starts)."""
    script = ("import sys; from pipeline import cli; cli.build_parser(study_preset='f4_at_scale'); "
              "print(sorted(m for m in ('tensorflow', 'apache_beam', 'tensorflow_transform', 'grpc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_startup_logging_is_filtered_and_warnings_still_show(tmp_path):
    """What a command writes to file descriptor 2 goes through pipeline.core.startup_noise: absl's pre-init INFO
    lines, cpu_feature_guard's second line, SentencePiece's LOG(INFO) and the no-GPU cuInit error are dropped;
    warnings, errors and Python's own output pass, in order."""
    noise = ["WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             "I0000 00:00:1796520090.133165    1977 port.cc:153] oneDNN custom operations are on.",
             "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
             "appropriate compiler flags.",
             "normalizer.cc(51) LOG(INFO) precompiled_charsmap is empty. use identity normalization.",
             "E0000 00:00:1796520952.240834   25209 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error"]
    kept = ["W0000 00:00:1796520952.240834   25209 some_op.cc:12] a real warning",
            "E0000 00:00:1796520952.240834   25209 loader.cc:99] a real error",
            "UserWarning: something a user should see"]
    written = tmp_path / "stderr.txt"
    written.write_text("\n".join([noise[0], kept[0], noise[1], noise[2], kept[1], noise[3], noise[4], kept[2]]) + "\n")
    script = ("import os, sys; from pipeline.core import startup_noise\n"
              "with startup_noise.filtered_stderr():\n"
              "    os.write(2, open(sys.argv[1], 'rb').read())\n")
    result = subprocess.run([sys.executable, "-c", script, str(written)], capture_output=True, text=True, check=True)
    assert result.stderr.splitlines() == kept
