"""The stage pages from fresh shells, in the order a reader meets them, on a tiny world: the simulator,
the RQ-VAE, the SIDs, the transform, the ranker and the experiment (docs/simulator.md ... docs/ranker.md)."""

import json
import os

import pytest

from doc_blocks import Tour

PAGES = ["docs/simulator.md", "docs/rqvae.md", "docs/materialize.md", "docs/transform.md", "docs/ranker.md"]


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    tour = Tour("pages", tmp_path_factory.mktemp("pages"))
    try:
        yield tour, {page: tour.run_page(page) for page in PAGES}
    finally:
        tour.stop()


def test_each_stage_prints_its_summary_and_writes_its_output(tour):
    tour, printed = tour
    [simulate] = printed["docs/simulator.md"]
    assert "oracle AUC" in simulate and "1,500 items (D=32)" in simulate
    [rqvae] = printed["docs/rqvae.md"]
    assert "exported to runs/demo/rqvae/export/1" in rqvae
    [materialize] = printed["docs/materialize.md"]
    assert "SID table" in materialize and "rows_materialised" in materialize
    [transforms] = printed["docs/transform.md"]
    assert "transform output: runs/demo/transform/sid_spm_512" in transforms
    assert "transform output: runs/demo/transform/sid_2gram" in transforms
    assert os.path.exists(os.path.join(tour.workdir, "runs", "demo", "metrics", "lookups.json"))


def test_the_ranker_trains_day_by_day_and_the_experiment_reuses_the_transforms(tour):
    tour, printed = tour
    train, experiment = printed["docs/ranker.md"]
    days = [line.split()[0] for line in train.splitlines() if line.split() and line.split()[0].isdigit()]
    assert days == ["5", "6", "7"], train  # the evaluation days, each before it is trained on
    with open(os.path.join(tour.workdir, "runs", "demo", "metrics", "experiment.json")) as f:
        result = json.load(f)
    labels = {row["label"] for row in result["rows"]}
    assert {"random_hash_512", "sid_2gram", "sid_spm_512", "sid_spm_512_no_history"} <= labels
    assert "sid_spm_512" in experiment and "random_hash_512" in experiment
    assert tour.stderr == []
