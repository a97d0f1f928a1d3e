"""docs/operating.md from fresh shells, as an operator follows it, on a tiny world: the lineage is fitted,
the first `sidrec daily` publishes version 1, a server serves it, the next day is taken and swapped in;
docs/serving.md on that server (ranking, REST status, a canary label moved by two reloads); then the same
daily loop for every other representation kind, with a server that was watching their serving
directories before any version existed."""

import json
import os
import re

import pytest

from doc_blocks import Tour, free_port
from pipeline.core.cards import read_serving_sample
from worlds import PredictionStream

PAGE, SERVING = "docs/operating.md", "docs/serving.md"
# The other kinds, fitted as the page fits sid_spm (sizes as the page gives them: 8,192 rows).
OTHER_KINDS = {"random_hash": "--buckets 8192", "dense": "", "sid_ngram": "--ngram 2", "sid_prefix": "--buckets 8192"}


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    tour = Tour("operating", tmp_path_factory.mktemp("operating"))
    out = {"tour": tour}
    stream = {}

    def on_block(number, block, printed):
        if "background" in block.options:  # the server is up: ask it for scores until the page ends
            transform = os.path.join(tour.workdir, "runs", "live", "transform", "sid_spm_512")
            stream["it"] = PredictionStream(f"127.0.0.1:{tour.ports['8500']}", "ranker",
                                            read_serving_sample(transform)[:4], pause=0.1).__enter__()

    try:
        out["page"] = tour.run_page(PAGE, on_block=on_block)
        stream["it"].wait_for_version(2)
        stream["it"].__exit__(None, None, None)
        out["stream"] = stream["it"]
        out["serving"] = tour.run_page(SERVING)
        out["others"] = _other_kinds(tour)
        yield out
    finally:
        if "it" in stream:
            stream["it"].__exit__(None, None, None)
        tour.stop()


def _other_kinds(tour: Tour) -> dict:
    """Each other kind's lineage on the same world (days 1-6 logged by now), one server watching all four
    serving directories from before the first version; day 7 arrives; one `sidrec daily` per kind takes the
    day its lineage was fitted through (version 1) and day 7 (version 2)."""
    names, transforms = {}, {}
    for kind, flags in OTHER_KINDS.items():
        transforms[kind] = tour.run(f"sidrec transform --run_dir runs/live --kind {kind} {flags} --eval_from 5")
        names[kind] = re.search(r"transform output: runs/live/transform/(\S+)", transforms[kind]).group(1)
    config = "".join(f'  config {{ name: "{kind}" base_path: "{tour.workdir}/runs/live/serving/{kind}" '
                     'model_platform: "tensorflow" }\n' for kind in OTHER_KINDS)
    with open(os.path.join(tour.workdir, "kinds.config"), "w") as f:
        f.write(f"model_config_list {{\n{config}}}\n")
    server_port = free_port()
    tour.start_server(f"sidrec serve --model_config_file kinds.config --port {server_port}", [server_port])
    tour.run("sidrec simulate --run_dir runs/live --num_days 10 --through_day 7")
    lines = {kind: tour.run(f"sidrec daily --run_dir runs/live --representation {name} --model_name {kind}")
             for kind, name in names.items()}
    answered = {}
    for kind, name in names.items():
        sample = read_serving_sample(os.path.join(tour.workdir, "runs", "live", "transform", name))[:3]
        with PredictionStream(f"127.0.0.1:{server_port}", kind, sample) as stream:
            stream.wait_for_version(2)
        answered[kind] = stream
    return {"names": names, "transforms": transforms, "lines": lines, "answered": answered,
            "log": tour.server_log(-1)}


def test_the_first_daily_step_publishes_version_1_and_says_so_in_one_line(tour):
    lineage, first, serve, next_day, health = tour["page"]
    assert "transform output: runs/live/transform/sid_spm_512" in lineage
    [line] = first.splitlines()
    assert line.startswith("day 5 (first step of the lineage: trained on days 1-5): CTR AUC "), line
    assert "blessed (held-out AUC" in line and "published version 1" in line
    [line] = next_day.splitlines()[-1:]
    assert line.startswith("day 6: CTR AUC ") and "published version 2" in line, next_day
    # `sidrec health`: a row for each step taken, the figure written.
    rows = [line.split()[0] for line in health.splitlines() if line[:4].strip().isdigit()]
    assert rows == ["5", "6"], health
    assert "figure: runs/live/report/health_sid_spm_512" in health


def test_the_server_serves_version_1_then_swaps_version_2_in_without_a_failed_request(tour):
    stream = tour["stream"]
    assert not stream.failures and stream.versions[0] == 1 and stream.versions[-1] == 2
    assert stream.versions == sorted(stream.versions)


def test_commands_print_only_what_they_say(tour):
    """No TensorFlow or SentencePiece start-up logging on stderr (the filter of pipeline.core.startup_noise)."""
    assert tour["tour"].stderr == []


def test_the_serving_page_ranks_reports_status_and_moves_a_label(tour):
    predict, load_both, reload_canary = tour["serving"]
    assert "now serves models.config" in load_both
    assert sum(line.startswith("user ") for line in predict.splitlines()) == 3, predict
    assert "  1. " in predict and " click " in predict
    status = json.loads(predict[predict.index("{"):])
    assert status["model_version_status"][0] == {"version": "2", "state": "AVAILABLE",
                                                 "status": {"error_code": "OK", "error_message": ""}}
    assert "now serves models.config" in reload_canary
    answer = json.loads(reload_canary[reload_canary.index("{"):])
    assert answer["model_version_status"][0]["version"] == "2"  # the canary label names version 2


@pytest.mark.parametrize("kind", OTHER_KINDS)
def test_every_kind_is_published_served_and_takes_the_next_day(tour, kind):
    others = tour["others"]
    rows = {"random_hash": "512 table rows", "dense": "0 table rows"}.get(kind, "table rows")
    assert rows in others["transforms"][kind] and "rows_joined 9,000" in others["transforms"][kind]  # days 1-6
    first, next_day = others["lines"][kind].splitlines()
    assert first.startswith("day 6 (first step of the lineage: trained on days 1-6): ") and \
        "published version 1" in first, first
    assert next_day.startswith("day 7: ") and "published version 2" in next_day, next_day
    stream = others["answered"][kind]
    assert not stream.failures and stream.versions and stream.versions[-1] == 2
    log = others["log"]
    assert log.count(f"No versions of servable {kind} found under base path") == 1
    assert f"model {kind}: version 1 available" in log and f"model {kind}: version 2 available" in log

