"""The pipeline with its run directory on a non-local file system: a file:// URL, which TensorFlow and (through
beam_jobs.gfile_filesystem) Beam read as they read gs://, and on which any os.path, open() or glob call
fails. Simulate, the RQ-VAE, materialize, transform, train, export, serve and predict run there, and give
what the same steps give on a local path."""

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
from apache_beam.options.pipeline_options import SetupOptions, StandardOptions
import tensorflow as tf

from beam_jobs import local_runner
from beam_jobs.options import PROJECT_SETUP, pipeline_options
from pipeline import cli
from pipeline.core import features as fk
from pipeline.core import files
from pipeline.core.cards import read_serving_sample
from pipeline.core.layout import RankerLayout, RQVAELayout, SidTableLayout
from pipeline.core.publish import list_versions, published
from pipeline.data import sid_table_io
from pipeline.stages import day_loop
from serving.client import RankerClient
from worlds import IN_MEMORY, PredictionStream, small_run, start_server

TINY_RANKER = ["--batch_size", "256", "--hidden_dims", "16", "--embedding_dim", "8"]  # spm_ranker's config


@pytest.fixture(scope="module")
def url_run(tmp_path_factory):
    """The shared small world made again under a file:// URL, then the CLI's stages on it."""
    root = "file://" + str(tmp_path_factory.mktemp("url_run"))
    layout = small_run(root)  # simulate, RQ-VAE, export, materialize (Beam)
    assert cli.main(["transform", "--run_dir", root, "--kind", "sid_spm", "--vocab_size", "300", *IN_MEMORY]) == 0
    assert cli.main(["train", "--run_dir", root, "--representation", "sid_spm_300", *TINY_RANKER]) == 0
    [run] = files.listdir(layout.ranker)
    return {"layout": layout, "transform": layout.transform_output("sid_spm_300"),
            "run": files.join(layout.ranker, run)}


def _records(transform_dir: str, day: int) -> list[bytes]:
    paths, compression = day_loop.transformed_day_files(transform_dir, day)
    return sorted(r.numpy() for r in tf.data.TFRecordDataset(paths, compression_type=compression))


def _scores(export_dir: str, records: list[bytes]) -> np.ndarray:
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    return serve(examples=tf.constant(records))[fk.CLICK_PROBABILITY].numpy()


def test_a_run_on_a_file_url_equals_the_local_run(url_run, run_dir, spm_run, spm_ranker):
    layout = url_run["layout"]
    assert not os.path.exists(layout.root) and files.isdir(layout.root)  # a URL: invisible to os.path
    local = sid_table_io.read_sid_table(SidTableLayout(run_dir.sids).table).lookup()
    remote = sid_table_io.read_sid_table(SidTableLayout(layout.sids).table).lookup()
    assert local.keys() == remote.keys() and all((local[i] == remote[i]).all() for i in local)
    for day in (1, 2, 3):
        assert _records(url_run["transform"], day) == _records(spm_run["output"], day), day
    metrics = [json.loads(line) for line in files.read_text(RankerLayout(url_run["run"]).metrics).splitlines()]
    assert [m["evaluated_on_day"] for m in metrics] == [2, 3]
    for remote_entry, entry in zip(metrics, spm_ranker["history"]):
        for key in ("ctr_auc", "ctr_1d_auc", "engagement_rmse"):
            assert remote_entry[key] == pytest.approx(entry[key], abs=1e-6), key
    sample = read_serving_sample(spm_run["output"])
    exports = RankerLayout(url_run["run"]).export
    assert list_versions(exports) == [1, 2, 3]
    np.testing.assert_allclose(_scores(files.join(exports, "3"), sample),
                               _scores(os.path.join(spm_ranker["export"], "3"), sample), atol=1e-6)


def test_the_rqvae_stage_serve_and_predict_on_a_file_url(url_run, spm_run, spm_ranker):
    layout = url_run["layout"]
    assert cli.main(["train-rqvae", "--run_dir", layout.root, "--max_first_day", "0", "--encoder_dims", "32,8",
                     "--num_levels", "4", "--codebook_size", "16", "--max_epochs", "2", "--kmeans_iterations", "2"]) == 0
    assert files.read_json(RQVAELayout(layout.rqvae).sid_quality)["num_levels"] == 4
    exports = RankerLayout(url_run["run"]).export
    process, target = start_server("--model_name", "ranker", "--model_base_path", exports)
    try:
        sample = read_serving_sample(spm_run["output"])
        outputs, version = RankerClient(target).predict("ranker", sample)
        assert version == 3
        np.testing.assert_allclose(outputs[fk.CLICK_PROBABILITY],
                                   _scores(os.path.join(spm_ranker["export"], "3"), sample), atol=1e-6)
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "predict", "--run_dir", layout.root,
                               "--server", target, "--representation", "sid_spm_300", "--users", "2"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.count("user ") >= 2
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_version_published_on_an_object_store_appears_to_a_polling_server_only_when_whole(
        url_run, spm_run, spm_ranker, monkeypatch):
    """On a URL the staged files move one at a time (a rename is a copy per object): slowed down here, while
    a server polls every 0.2 s. saved_model.pb moves last, so the server never tries a partial version."""
    source = RankerLayout(url_run["run"]).export
    base = files.join(url_run["layout"].root, "published")
    files.copy_tree(files.join(source, "2"), files.join(base, "2"))
    moves, rename = [], tf.io.gfile.rename

    def slow_rename(src, dst, overwrite=False):
        moves.append(files.basename(dst))
        time.sleep(0.15)
        return rename(src, dst, overwrite=overwrite)

    log = str(pathlib.Path(url_run["layout"].root[len("file://"):]) / "server.log")
    process, target = start_server("--model_name", "ranker", "--model_base_path", base, stderr_path=log)
    sample = read_serving_sample(spm_run["output"])
    try:
        with PredictionStream(target, "ranker", sample[:4]) as stream:
            monkeypatch.setattr(tf.io.gfile, "rename", slow_rename)
            with published(files.join(base, "3")) as staging:
                files.copy_tree(files.join(source, "3"), staging)
            monkeypatch.setattr(tf.io.gfile, "rename", rename)
            stream.wait_for_version(3)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert len(moves) > 4 and moves[-1] == "saved_model.pb"  # the marker last, file by file
    assert not stream.failures and stream.versions[-1] == 3
    assert "failed to load" not in pathlib.Path(log).read_text()
    expected = _scores(os.path.join(spm_ranker["export"], "3"), sample[:4])
    for outputs, version in stream.answers:
        if version == 3:
            np.testing.assert_allclose(outputs[fk.CLICK_PROBABILITY], expected, atol=1e-6)


def test_remote_runners_get_the_project_and_say_how():
    said = []
    options = pipeline_options(["--runner=DataflowRunner", "--project", "p"], said.append)
    assert options.view_as(SetupOptions).setup_file == PROJECT_SETUP and os.path.exists(PROJECT_SETUP)
    assert "shipping the project to the workers" in said[0]
    said.clear()
    options = pipeline_options(["--runner=DataflowRunner", "--sdk_container_image", "r/sidrec-beam:1"], said.append)
    assert options.view_as(SetupOptions).setup_file is None and "container image r/sidrec-beam:1" in said[0]
    said.clear()
    # Here: DirectRunner's FnApiRunner, named outright (DirectRunner would first try to download Prism).
    for local in ([], ["--runner=DirectRunner"]):
        assert pipeline_options(local, said.append).view_as(StandardOptions).runner == local_runner.NAME and not said


def test_the_spm_transform_job_across_worker_processes_equals_the_in_memory_one(run_dir, spm_run, tmp_path):
    """Worker processes register TensorFlow Text's ops before the transform graph loads (beam_jobs.worker_startup):
    without it, they fail with "Op type not registered 'SentencepieceOp'", as Dataflow's workers would."""
    from beam_jobs import transform

    out = transform.run(transform.TransformConfig(data_dir=run_dir.data.root, sids=run_dir.sids,
                                                  output=str(tmp_path / "sid_spm"), kind="sid_spm", vocab_size=300),
                        ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    for day in (1, 2, 3):
        assert _records(out["output"], day) == _records(spm_run["output"], day), day
    assert out["counters"]["rows_joined"] == spm_run["counters"]["rows_joined"] == 3 * 1500
