"""The docs as the CLI's tests, checked statically: every runnable shell block of README.md and docs/ is
in a tour that a test runs (tests/doc_blocks.py), every block that is not run says why with a known
reason, and the sidrec commands of those blocks still parse."""

import pathlib
import re

import pytest

import doc_blocks
from doc_blocks import PAGES, SKIP_REASONS, TOURS, blocks, commands, sidrec_argv

TESTS = pathlib.Path(__file__).resolve().parent


def _all_blocks():
    return [b for page in PAGES for b in blocks(page)]


def test_every_runnable_block_is_in_a_tour_and_every_tour_is_run():
    toured = {page for pages in TOURS.values() for page in pages}
    runnable = {b.page for b in _all_blocks() if b.runnable}
    assert runnable <= toured, f"runnable blocks on pages no tour runs: {sorted(runnable - toured)}"
    assert toured <= runnable, f"tours over pages with nothing to run: {sorted(toured - runnable)}"
    sources = "".join(p.read_text() for p in TESTS.glob("test_*.py"))
    for name, pages in TOURS.items():
        assert f'Tour("{name}"' in sources, f"no test runs tour {name!r}"
        for page in pages:  # a tour runs its pages whole, and a test asks for each
            assert f'"{page}"' in sources, f"tour {name!r}: no test runs {page}"


def test_every_block_says_what_it_is():
    for block in _all_blocks():
        assert block.kind in ("sh", "text"), f"{block.where()}: fence info {block.info!r}: say sh or text"
        unknown = set(block.options) - {"skip", "background", "file"}
        assert not unknown, f"{block.where()}: unknown fence options {unknown}"
        if "skip" in block.options:
            assert block.options["skip"] in SKIP_REASONS, f"{block.where()}: skip={block.options['skip']} is not " \
                                                          f"one of {sorted(SKIP_REASONS)}"


def test_commands_are_written_as_a_user_types_them():
    for block in _all_blocks():
        if block.kind == "sh":
            assert ".venv/bin/sidrec" not in block.text, f"{block.where()}: write `sidrec` (README: activate .venv)"


@pytest.mark.parametrize("block", [b for b in _all_blocks() if "skip" in b.options], ids=lambda b: b.where())
def test_commands_of_blocks_not_run_here_still_parse(block):
    """A renamed or removed flag in a block this machine cannot run fails here, not on the reader's cluster."""
    from pipeline import cli

    for command in commands(block.text):
        argv = sidrec_argv(command)
        if argv is None:
            continue
        parser = cli.build_parser(study_preset=_preset(argv))
        try:
            args, extra = parser.parse_known_args(argv)
        except SystemExit:
            pytest.fail(f"{block.where()}: `{command}` does not parse")
        if args.command not in cli.BEAM_COMMANDS:
            assert not extra, f"{block.where()}: `{command}`: unknown flags {extra}"
        assert not [a for a in extra if not a.startswith("--") and not re.match(r"^-", a) and "=" not in a
                    and args.command not in cli.BEAM_COMMANDS], command


def _preset(argv: list[str]) -> str:
    return argv[argv.index("--preset") + 1] if "--preset" in argv else ""


def test_sizes_change_only_sizes():
    """The one substitution table: values and size flags, never a command, a flag name or a path."""
    before = "sidrec transform --run_dir runs/live --kind sid_spm --vocab_size 8192 --eval_from 5"
    after = doc_blocks.sized(before)
    assert after == "sidrec transform --run_dir runs/live --kind sid_spm --vocab_size 512 --eval_from 5"
    before = "sidrec experiment --run_dir runs/mine --seeds 3 --arms random_hash:8192,sid_ngram:2"
    assert doc_blocks.sized(before) == "sidrec experiment --run_dir runs/mine --seeds 2 --arms random_hash:512,sid_ngram:2"
    assert doc_blocks.sized("sidrec simulate --run_dir runs/x").startswith("sidrec simulate --run_dir runs/x --num_items ")
    assert doc_blocks.commands("a \\\n  b  # note\n\n# only a comment\nc '#kept'\n") == ["a b", "c '#kept'"]
