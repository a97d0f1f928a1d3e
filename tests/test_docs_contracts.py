"""docs/contracts.md from fresh shells: `sidrec validate` on a data directory (lenient, then strict), and
`sidrec movielens` on the real MovieLens files (the page's path is where they are here)."""

import os

import pytest

from doc_blocks import Tour

PAGE = "docs/contracts.md"


@pytest.fixture(scope="module")
def tour(tmp_path_factory, movielens_dir):
    tour = Tour("contracts", tmp_path_factory.mktemp("contracts"),
                paths={"/path/to/movielens-latest-small": movielens_dir})
    tour.run("sidrec simulate --run_dir runs/mine")  # given: data in the contracts under runs/mine/data
    return tour, tour.run_page(PAGE)


def test_validate_and_the_movielens_import_print_their_summaries(tour):
    tour, (validate, movielens) = tour
    assert validate.count("10,500 impressions") == 2, validate  # 7 tiny days of 1,500, both ways
    assert "corpus: runs/movielens/data/corpus.parquet" in movielens
    assert os.path.isdir(os.path.join(tour.workdir, "runs", "movielens", "data", "logs"))
    assert tour.stderr == []
