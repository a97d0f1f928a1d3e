"""`sidrec report` on a real two-seed experiment, made as docs/your_data.md makes it from a team's two tables
(import, RQ-VAE, SIDs, experiment, report; each command from a fresh shell): the page parses, every figure
is in it, rows match the JSON, the verdicts are the ones worked out by hand."""

import base64
import dataclasses
import json
import os
from html.parser import HTMLParser

import numpy as np
import pytest

from doc_blocks import Tour
from pipeline import cli
from pipeline.core import stability
from pipeline.core.layout import RankerLayout, RunLayout, SidTableLayout
from pipeline.data import corpus_io, sid_table_io
from pipeline.stages import findings, report
from worlds import SMALL_WORLD

VOID = {"meta", "img", "br", "hr", "link"}


class _Page(HTMLParser):
    """Collects the images and the table rows of a page and checks that every tag is closed in order."""

    def __init__(self):
        super().__init__()
        self.open, self.images, self.rows, self._row, self._cell = [], [], [], None, None

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.open.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"</{tag}> closes another tag"
        if tag in ("td", "th"):
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr":
            self.rows.append(self._row)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


PAGE = "docs/your_data.md"
PRINTED = {}  # what the page's blocks printed
PARIS_NOON_UTC = 1_767_265_200  # 2026-01-01 12:00 in Paris: day d of the world is 2026-01-0d there


def _exports(root: str) -> None:
    """What a team exports: an interactions table (two ';'-separated CSV files, the page's column names) and an
    item table (Parquet), here from a small simulated world's impressions and corpus."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.data.simulator import simulate
    from pipeline.stages.simulate import to_impressions

    data = simulate(dataclasses.replace(SMALL_WORLD, num_days=4))
    impressions = to_impressions(data)
    seconds = PARIS_NOON_UTC + (impressions.day - 1) * 86_400 + np.arange(impressions.size) % 20_000
    os.makedirs(os.path.join(root, "exports"))
    half = impressions.size // 2
    for part, rows in (("1", slice(0, half)), ("2", slice(half, None))):
        with open(os.path.join(root, "exports", f"events-{part}.csv"), "w") as f:
            f.write("uid;vid;ts;clicked;watch_frac\n")
            for user, item, ts, click, fraction in zip(impressions.user_id[rows], impressions.candidate_item_id[rows],
                                                       seconds[rows], impressions.click[rows],
                                                       impressions.engagement[rows]):
                f.write(f"{user};{item};{ts};{click};{fraction:.4f}\n")
    pq.write_table(pa.table({"vid": data.item_ids.astype(str).tolist(),
                             "emb": [row.tolist() for row in data.embeddings]}),
                   os.path.join(root, "exports", "items.parquet"))


@pytest.fixture(scope="module")
def experiment_run(tmp_path_factory):
    tour = Tour("your data", tmp_path_factory.mktemp("your_data"))
    _exports(tour.workdir)
    _, PRINTED["experiment"] = tour.run_page(PAGE)
    assert tour.stderr == []
    before = os.getcwd()
    os.chdir(tour.workdir)  # the run's cards name its directories as the page's commands did: runs/mine/...
    try:
        yield RunLayout(os.path.join(tour.workdir, "runs", "mine"))
    finally:
        os.chdir(before)


def _parse(path: str) -> _Page:
    page = _Page()
    with open(path, encoding="utf-8") as f:
        page.feed(f.read())
    page.close()
    assert page.open == [], f"unclosed tags {page.open}"
    return page


def _fmt(cell):
    return f"{cell['mean']:.4f} [{cell['ci95_low']:.4f}, {cell['ci95_high']:.4f}]"


def test_the_report_of_an_experiment(experiment_run):
    html_path, md_path = (os.path.join(experiment_run.report, name) for name in (report.HTML, report.MARKDOWN))

    page = _parse(html_path)
    figures = [f for f in os.listdir(experiment_run.report)
               if f.startswith(("fig", "per_day_", "calibration_", "stability_"))]
    assert {"fig2_3_mine.png", "per_day_mine.png", "calibration_mine.png", "stability_mine.png"} <= set(figures)
    assert len(page.images) == len(figures)  # every figure drawn is in the page, embedded
    for image in page.images:
        assert image["src"].startswith("data:image/png;base64,") and image["alt"]
        assert base64.b64decode(image["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"

    with open(os.path.join(experiment_run.report, report.RESULTS)) as f:
        results = json.load(f)
    [row] = [r for r in results["units"]["mine"]["rows"] if r["arm"] == "sid_2gram"]
    assert row["seeds"] == [0, 1] and row["ctr_auc"]["seeds"] == 2 and row["table_size"] == (4 // 2) * 16 ** 2  # bigram's (L/2) x K^2
    [shown] = [r for r in page.rows if r[:2] == ["sid_2gram", "yes"] and len(r) == 6]  # the experiment table
    assert shown[2] == _fmt(row["ctr_auc"]) and shown[4] == _fmt(row["ctr_1d_auc"])
    change = row["ctr_auc_change_pct"]
    assert shown[3].startswith(f"{change['mean']:+.2f}% [{change['ci95_low']:+.2f}, {change['ci95_high']:+.2f}]")
    # The verdicts, judged here from the runs' own metrics. F1: dense against random hashing without the
    # history, paired by seed, Student's t with n = 2; the other findings lack their arms in this run.
    with open(experiment_run.experiment) as f:
        runs = json.load(f)["runs"]
    changes = [100.0 * (_mean_ctr_auc(runs, "dense", seed) / _mean_ctr_auc(runs, "random_hash_512_no_history", seed)
                        - 1.0) for seed in (0, 1)]
    mean, half = np.mean(changes), T_975_ONE_DEGREE * np.std(changes, ddof=1) / np.sqrt(2)
    f1 = findings.REPRODUCED if mean + half < 0 else findings.NOT_REPRODUCED if mean - half > 0 else \
        findings.INCONCLUSIVE
    # F5: the mean cosine of item pairs by the exact length of the SID prefix they share, every pair counted.
    cosines = _mean_cosine_by_shared_prefix(experiment_run)
    steps = np.diff([c for c in cosines if c is not None])
    f5 = findings.REPRODUCED if (steps > 0).all() else findings.NOT_REPRODUCED if (steps < -0.01).any() else \
        findings.INCONCLUSIVE
    # F8: bigram's (L/2) x K^2 = 512 rows against random hashing's 512, both with history: each seed's churn
    # on the probe (from the kept probe predictions) against random hashing's of that seed, per slice.
    churn_changes = {name: [100.0 * (_probe_churn(runs, "sid_2gram", seed, name)
                                     / _probe_churn(runs, "random_hash_512", seed, name) - 1.0) for seed in (0, 1)]
                     for name in ("overall", "tail", "new")}
    bounds = {name: (np.mean(c) - T_975_ONE_DEGREE * np.std(c, ddof=1) / np.sqrt(2),
                     np.mean(c) + T_975_ONE_DEGREE * np.std(c, ddof=1) / np.sqrt(2)) for name, c in churn_changes.items()}
    f8 = findings.NOT_REPRODUCED if any(low > 0 for low, _ in bounds.values()) else \
        findings.REPRODUCED if bounds["overall"][1] < 0 else findings.INCONCLUSIVE
    expected = {claim: findings.INCONCLUSIVE for claim in CLAIM_IDS}
    expected.update(F1=f1, F5=f5, F8=f8)
    summary = {r[0]: r[2] for r in page.rows if len(r) == 3 and r[0] in CLAIM_IDS and r[1] in findings.CLAIMS.values()}
    per_unit = {r[0]: r[1] for r in page.rows if len(r) == 3 and r[0] in CLAIM_IDS and r[1] not in findings.CLAIMS.values()}
    assert summary == per_unit == expected
    [evidence] = [r[2] for r in page.rows if len(r) == 3 and r[0] == "F1" and r[1] == f1]
    assert f"CTR AUC {mean:+.2f}% [{mean - half:+.2f}, {mean + half:+.2f}]" in evidence
    assert {f["id"]: f["verdict"] for f in results["units"]["mine"]["findings"]} == expected

    # The slice table: each run's slice metrics averaged over its evaluation days (metrics.jsonl), then over
    # the seeds; impressions per run.
    per_seed = []
    for seed in (0, 1):
        [run_dir] = [r["run_dir"] for r in runs if r["label"] == "sid_2gram" and r["seed"] == seed]
        with open(RankerLayout(run_dir).metrics) as f:
            per_seed.append([json.loads(line)["slices"]["age"]["new"] for line in f])
    [new] = [r for r in page.rows if len(r) == 7 and r[:3] == ["sid_2gram", "yes", "age: new"]]
    assert new[3] == f"{np.mean([sum(d['impressions'] for d in days) for days in per_seed]):,.0f}"
    assert new[5].startswith(f"{np.mean([np.mean([d['ne'] for d in days]) for days in per_seed]):.3f} [")
    assert row["slices"]["popularity"]["unseen"]["impressions"] > 0 and len(row["reliability"]) == 10
    # The stability table: churn per slice over the seeds, the first two seeds' variance.
    [shown] = [r for r in page.rows if len(r) == 8 and r[:2] == ["sid_2gram", "yes"]]
    assert shown[2].startswith(f"{row['churn_overall']['mean']:.4f} [") and row["churn_overall"]["seeds"] == 2
    assert shown[5] == f"{row['seed_variance']['overall']:.4f}"

    with open(md_path) as f:
        markdown = f.read()
    assert f"| sid_2gram | yes | {_fmt(row['ctr_auc'])} |" in markdown
    for figure in figures:
        assert f"]({figure})" in markdown


CLAIM_IDS = [f"F{i}" for i in range(1, 9)]
T_975_ONE_DEGREE = 12.706204736  # Student's t, 97.5th percentile, one degree of freedom


def _mean_cosine_by_shared_prefix(world) -> list[float | None]:
    """Per prefix length n = 1..L: the mean cosine of the item pairs whose SIDs share exactly n leading codes."""
    table = sid_table_io.read_sid_table(SidTableLayout(world.sids).table)
    corpus = corpus_io.read_corpus(world.data.corpus)
    embeddings = dict(zip(corpus.item_ids, corpus.embeddings))
    unit = np.stack([embeddings[i] for i in table.item_ids]).astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    cosine = unit @ unit.T
    shared = np.zeros(cosine.shape, int)  # leading codes two items share
    still = np.ones(cosine.shape, bool)
    for level in range(table.sids.shape[1]):
        still &= table.sids[:, level][:, None] == table.sids[:, level][None, :]
        shared += still
    pairs = np.triu(np.ones(cosine.shape, bool), k=1)
    return [float(cosine[pairs & (shared == n)].mean()) if (pairs & (shared == n)).any() else None
            for n in range(1, table.sids.shape[1] + 1)]


def _probe_churn(runs: list[dict], label: str, seed: int, name: str) -> float:
    """A run's churn on a slice of the probe: the mean |p_d - p_(d-1)| of its kept probe predictions."""
    [run] = [r for r in runs if r["label"] == label and r["seed"] == seed]
    kept = [np.load(RankerLayout(run["run_dir"]).probe_predictions(day)) for day in run["days"]]
    rows = {"overall": np.ones(len(kept[0]["tail"]), bool), "tail": kept[0]["tail"], "new": kept[0]["new"]}[name]
    return float(np.mean([np.abs(b["click_probability"] - a["click_probability"])[rows].mean()
                          for a, b in zip(kept, kept[1:])]))


def _mean_ctr_auc(runs: list[dict], label: str, seed: int) -> float:
    """A run's score: the mean CTR AUC over the evaluation days, read from its metrics.jsonl."""
    [run_dir] = [r["run_dir"] for r in runs if r["label"] == label and r["seed"] == seed]
    with open(RankerLayout(run_dir).metrics) as f:
        return float(np.mean([json.loads(line)["ctr_auc"] for line in f]))


def test_a_study_of_two_units_compares_them_in_one_figure(experiment_run, tmp_path):
    units, _ = report.load_units(RunLayout(experiment_run.root))
    study = RunLayout(str(tmp_path / "study"))
    os.makedirs(study.metrics)
    with open(study.study, "w") as f:
        json.dump({"units": [{**units[0], "name": name} for name in ("content", "memorisation")]}, f)
    result = report.run(study, str(tmp_path / "out"))
    assert os.path.basename(result["figures"][0]) == "worlds.png"
    page = _parse(result["html"])
    assert len(page.images) == len(result["figures"]) == 9  # worlds; figures 2-3, per-day, stability, calibration each
    header = next(r for r in page.rows if r[:2] == ["finding", "claim"])
    assert header[2:] == ["content", "memorisation"]


def test_a_run_without_results_is_told_what_makes_them(tmp_path, capsys):
    assert cli.main(["report", "--run_dir", str(tmp_path)]) == 2
    assert "make one with `sidrec study` or `sidrec experiment`" in capsys.readouterr().err


def test_several_seeds_give_intervals_and_changes_paired_by_seed(experiment_run):
    """The page's `--seeds 3` (2 on the tiny world): each change against the baseline of its own seed, a t
    interval over the seeds, the A/A difference of an arm's two seeds and the per-day means, by hand."""
    out = PRINTED["experiment"]
    with open(experiment_run.experiment) as f:
        results = json.load(f)
    assert "2 seeds per arm; changes paired by seed against random_hash_512" in out
    assert results["seeds"] == 2 and len(results["runs"]) == 10  # (2 + 2 + 1 settings) x 2 seeds
    by = {(r["label"], r["seed"]): r for r in results["runs"]}
    for seed in (0, 1):  # each seed's change is against the baseline of the same seed
        arm, base = by[("sid_2gram", seed)], by[("random_hash_512", seed)]
        assert arm["ctr_auc_change_pct"] == pytest.approx(100 * (arm["ctr_auc"] / base["ctr_auc"] - 1))
    [row] = [r for r in results["rows"] if r["label"] == "sid_2gram"]
    changes = [by[("sid_2gram", s)]["ctr_auc_change_pct"] for s in (0, 1)]
    assert row["seeds"] == [0, 1] and row["ctr_auc_change_pct"]["mean"] == pytest.approx(sum(changes) / 2)
    half = 12.706 * abs(changes[0] - changes[1]) / 2  # t(1) x sd / sqrt(2), sd = |a - b| / sqrt(2)
    assert row["ctr_auc_change_pct"]["ci95_high"] - row["ctr_auc_change_pct"]["mean"] == pytest.approx(half)
    [base_row] = [r for r in results["rows"] if r["label"] == "random_hash_512"]
    assert base_row["ctr_auc_change_pct"]["ci95_low"] == base_row["ctr_auc_change_pct"]["ci95_high"] == 0
    assert f"{row['ctr_auc']['mean']:.4f} [{row['ctr_auc']['ci95_low']:.4f}, " in out
    # The A/A difference of the arm's two seeds, from the predictions each run kept, by hand.
    days = results["runs"][0]["days"]
    runs = [RankerLayout(by[("sid_2gram", s)]["run_dir"]) for s in (0, 1)]
    p = [np.concatenate([np.load(run.predictions(d))["click_probability"] for d in days]) for run in runs]
    cold = np.concatenate([np.load(runs[0].predictions(d))["cold_start"] for d in days])
    assert row["aa_difference"]["overall"] == pytest.approx(float(np.abs(p[0] - p[1]).mean()))
    assert row["aa_difference"]["cold_start"] == pytest.approx(float(np.abs(p[0] - p[1])[cold].mean()))
    assert 0 < row["aa_difference"]["overall"] < 0.5 and "A/A prediction difference" in out
    # Stability: the probe is the last day's first rows, scored by the model of every evaluation day; churn is
    # the mean |p_d - p_(d-1)|, the seed variance the mean |p(seed 0) - p(seed 1)| over the days, by hand.
    probes = [[np.load(run.probe_predictions(d)) for d in days] for run in runs]
    last_day = np.load(runs[0].predictions(days[-1]))
    assert len(probes[0][0]["click_probability"]) == min(stability.PROBE_ROWS, len(last_day["click"]))
    assert np.array_equal(probes[0][-1]["click_probability"],  # the last day's model scored it as it evaluated
                          last_day["click_probability"][:len(probes[0][-1]["click_probability"])])
    assert np.array_equal(probes[0][0]["new"], last_day["cold_start"][:len(probes[0][0]["new"])])
    churn = [np.mean([np.abs(b["click_probability"] - a["click_probability"]).mean() for a, b in zip(p, p[1:])])
             for p in probes]
    assert [by[("sid_2gram", s)]["churn_overall"] for s in (0, 1)] == pytest.approx(churn)
    assert row["churn_overall"]["mean"] == pytest.approx(np.mean(churn)) and np.mean(churn) > 0
    assert row["seed_variance"]["overall"] == pytest.approx(np.mean(
        [np.abs(a["click_probability"] - b["click_probability"]).mean() for a, b in zip(*probes)]))
    # The per-day curves: each day's mean over the two seeds, and the plot of them.
    assert [d["day"] for d in row["per_day"]] == days
    for i, day in enumerate(row["per_day"]):
        per_seed = [by[("sid_2gram", s)]["per_day"][i]["ctr_auc"] for s in (0, 1)]
        assert day["ctr_auc"]["mean"] == pytest.approx(sum(per_seed) / 2) and day["ctr_auc"]["n"] == 2
    assert os.path.getsize(os.path.join(experiment_run.report, "per_day.png")) > 10_000
