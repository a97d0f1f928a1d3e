"""The stage pages from fresh shells, in the order a reader meets them, on a tiny world: the simulator,
the RQ-VAE, the SIDs, the transform, the ranker and the experiment (docs/simulator.md ... docs/ranker.md)."""

import json
import os

import pytest

from doc_blocks import Tour
from serving import export

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
    [materialize, append] = printed["docs/materialize.md"]
    assert "SID table" in materialize and "rows_materialised" in materialize
    assert "nothing added: every item has a SID" in append and "rows_already_materialised 1,500" in append
    [transforms] = printed["docs/transform.md"]
    assert "transform output: runs/demo/transform/sid_spm_512" in transforms
    assert os.path.exists(os.path.join(tour.workdir, "runs", "demo", "metrics", "lookups.json"))


def test_the_ranker_trains_day_by_day(tour):
    tour, printed = tour
    train, _ = printed["docs/ranker.md"]
    days = [line.split()[0] for line in train.splitlines() if line.split() and line.split()[0].isdigit()]
    assert days == ["5", "6", "7"], train  # the evaluation days, each before it is trained on
    run = os.path.join(tour.workdir, "runs", "demo", "ranker")
    [spm] = [d for d in os.listdir(run) if d.startswith("sid_spm_512-")]
    assert export.versions(os.path.join(run, spm, "export")) == [1, 2, 3, 4, 5, 6, 7]  # one per day


def test_the_experiment_prints_the_table_relative_to_random_hash(tour):
    tour, printed = tour
    _, out = printed["docs/ranker.md"]
    assert "% change vs random_hash_512" in out and "oracle (true CTR)" in out
    assert "vocabularies learned on days before 5 only" in out
    with open(os.path.join(tour.workdir, "runs", "demo", "metrics", "experiment.json")) as f:
        results = json.load(f)
    labels = [r["label"] for r in results["runs"]]
    assert labels == ["random_hash_512", "random_hash_512_no_history", "sid_spm_512", "sid_spm_512_no_history"]
    for r in results["runs"]:
        assert r["days"] == [5, 6, 7] and 0 < r["ctr_auc"] <= 1
        if r["representation"] == "random_hash_512":
            assert r["ctr_auc_change_pct"] == 0 and r["ctr_1d_auc_change_pct"] == 0
        baseline = next(b for b in results["runs"] if b["representation"] == "random_hash_512"
                        and b["use_history"] == r["use_history"])
        assert r["ctr_auc_change_pct"] == pytest.approx(100 * (r["ctr_auc"] / baseline["ctr_auc"] - 1))
    assert 0.5 < results["oracle"]["ctr_auc"] <= 1
    assert os.path.getsize(os.path.join(tour.workdir, "runs", "demo", "report", "experiment.png")) > 10_000
    # Experiments export only the model trained through the last day; run directories are keyed by config.
    [run] = [r for r in results["runs"] if r["label"] == "random_hash_512"]
    assert os.path.basename(run["run_dir"]).startswith("random_hash_512-")
    assert export.versions(os.path.join(tour.workdir, run["run_dir"], "export")) == [7]
    # The SPM arm with history is `sidrec train`'s run of the page before, same config: reused, not retrained.
    [spm] = [r for r in results["runs"] if r["label"] == "sid_spm_512"]
    assert export.versions(os.path.join(tour.workdir, spm["run_dir"], "export")) == [1, 2, 3, 4, 5, 6, 7]
    assert tour.stderr == []
