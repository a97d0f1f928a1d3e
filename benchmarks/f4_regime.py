"""Where an F4 unit stands against the paper's regime: its vocabularies against the SIDs they tokenize.

For a study unit (a run directory with transform outputs of SPM and N-gram arms): the training window's
impressed items and their distinct SIDs, each SPM vocabulary's size over that count, each arm's lookups
per item by popularity bucket (its transform's lookups.json), and, for the items first seen in the
evaluation days, the share of their pieces that no training impression looked up (a piece's row trained
only through candidates of the training window; history rows are left out, a lower bound on training).

  python benchmarks/f4_regime.py --run_dir runs/study_f4m/worlds/balanced/seed0 \\
      --out benchmarks/results/f4_at_a_million_regime.json
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import sentencepiece as spm  # noqa: E402

from benchmarks.common import emit  # noqa: E402
from pipeline.core import files  # noqa: E402
from pipeline.core.cards import read_item_impressions, read_representation, read_sid_stats  # noqa: E402
from pipeline.core.layout import RunLayout, SidTableLayout, TransformLayout  # noqa: E402
from pipeline.core.representation import RepresentationConfig  # noqa: E402
from pipeline.data import corpus_io, sid_table_io  # noqa: E402
from pipeline.sid import sid_text  # noqa: E402


def _pieces(config: RepresentationConfig, transform_dir: str, sids: np.ndarray) -> list[tuple]:
    """Each item's pieces as hashable keys (SPM: its piece ids; N-gram: (group, codes))."""
    if config.uses_spm:
        processor = spm.SentencePieceProcessor(model_proto=files.read_bytes(TransformLayout(transform_dir).spm_model))
        return [tuple(p) for p in processor.encode(sid_text.sid_text(sids, config.codebook_size))]
    n = config.ngram
    return [tuple((g, tuple(row[g * n:(g + 1) * n])) for g in range(len(row) // n)) for row in sids.tolist()]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", required=True, help="a study unit's run directory")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    layout = RunLayout(args.run_dir)
    table = sid_table_io.read_sid_table(SidTableLayout(layout.sids).table)
    sid_of = table.lookup()
    corpus = corpus_io.read_corpus(layout.data.corpus)
    first_day = dict(zip(corpus.item_ids, corpus.first_day.tolist()))
    arms = sorted(name for name in files.listdir(layout.transform) if name.startswith("sid_"))
    card = read_representation(layout.transform_output(arms[0]))
    impressions = read_item_impressions(layout.transform_output(arms[0]))  # the same training window for every arm
    trained_items = [i for i in impressions if i in sid_of]
    distinct = len({tuple(sid_of[i].tolist()) for i in trained_items})
    new_items = [i for i, d in first_day.items() if d >= card["eval_from"] and i in sid_of]
    out = {"run_dir": args.run_dir, "train_days": card["train_days"], "eval_days": card["eval_days"],
           "num_levels": int(table.sids.shape[1]), "codebook_size": int(read_sid_stats(layout.sids)["codebook_size"]),
           "training_items": len(trained_items), "training_distinct_sids": distinct,
           "new_items": len(new_items), "arms": {}}
    for name in arms:
        transform_dir = layout.transform_output(name)
        config = RepresentationConfig(**read_representation(transform_dir)["config"])
        lookups = files.read_json(TransformLayout(transform_dir).lookups)
        trained = set()
        for pieces in _pieces(config, transform_dir, np.stack([sid_of[i] for i in trained_items])):
            trained.update(pieces)
        new_pieces = _pieces(config, transform_dir, np.stack([sid_of[i] for i in new_items]))
        untrained = [sum(p not in trained for p in pieces) for pieces in new_pieces]
        out["arms"][name] = {
            "table_rows": config.table_rows,
            "table_rows_over_distinct_training_sids": round(config.table_rows / distinct, 4),
            "lookups_per_item": {b: lookups[b]["mean_lookups_per_item"] for b in ("head", "torso", "tail")}
            | {"mean": lookups["mean_lookups_per_item"]},
            "new_items_lookups_per_item": float(np.mean([len(p) for p in new_pieces])),
            "new_item_pieces_untrained_share": float(sum(untrained) / sum(len(p) for p in new_pieces)),
            "new_items_with_no_trained_piece_share": float(np.mean([u == len(p) for u, p in zip(untrained,
                                                                                               new_pieces)]))}
    return emit(out, args.out)


if __name__ == "__main__":
    main()
