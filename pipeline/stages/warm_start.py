"""Warm start of a new lineage's ranker from the served one: what the served ranker learned survives a new tokenizer.

A new lineage (another RQ-VAE, SID table or vocabulary) has a new item table; everything else in the ranker
(the trunk, the heads) reads item vectors and does not depend on how they were made. So:
- every layer outside the item table is copied from the served model;
- the new table W is fitted so that each item's new pieces sum to the vector the served model gives it:
  min ||A W - V||^2 + damp^2 ||W||^2 over the items both lineages know, A the items' new pieces (a sparse
  0/1 matrix, one row per item), V their vectors under the served table. LSQR (scipy) solves it per
  embedding column; the damping pulls rows that few items use toward zero, and rows no item uses stay 0.
The result is written as a checkpoint of a ranker run of the new lineage that has trained through
`start_day - 1`, so `sidrec train`/`sidrec daily` go on from `start_day` (pipeline.stages.day_loop).
"""

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from pipeline.core.tf_env import tf
from pipeline.core.representation import RepresentationConfig
from pipeline.sid.preprocessing import item_pieces


def pieces_of(config: RepresentationConfig, item_ids: np.ndarray, sids: np.ndarray | None,
              spm_model: bytes | None = None) -> list[np.ndarray]:
    """Each item's pieces (rows of the item table) under a representation, as its transform graph makes them."""
    ids = tf.constant(np.asarray(item_ids, dtype=object).astype(str))
    if config.is_random_hash:
        return [np.array([p]) for p in tf.strings.to_hash_bucket_fast(ids, config.buckets).numpy()]
    if not config.has_sids:
        raise ValueError(f"{config.kind} has no item table to warm-start")
    ragged = item_pieces(tf.constant(np.asarray(sids, np.int64)), ids, config, spm_model)
    return [np.asarray(p) for p in ragged.to_list()]


def item_vectors(table: np.ndarray, pieces: list[np.ndarray]) -> np.ndarray:
    """Each item's vector: the sum of its pieces' rows (models.item_encoder.PieceItemEncoder)."""
    return np.stack([table[p].sum(0) for p in pieces])


def fit_table(pieces: list[np.ndarray], targets: np.ndarray, rows: int, damp: float = 0.1,
              iterations: int = 200) -> np.ndarray:
    """The table [rows, D] whose rows, summed over each item's pieces, reproduce `targets` [items, D] in the
    damped least-squares sense (scipy's LSQR, column by column)."""
    lengths = np.array([len(p) for p in pieces])
    matrix = scipy.sparse.csr_matrix((np.ones(lengths.sum()), np.concatenate(pieces), np.r_[0, np.cumsum(lengths)]),
                                     shape=(len(pieces), rows))
    columns = [scipy.sparse.linalg.lsqr(matrix, targets[:, d], damp=damp, iter_lim=iterations)[0]
               for d in range(targets.shape[1])]
    return np.stack(columns, 1).astype(np.float32)


def item_table(model) -> tf.Variable:
    """The ranker's item table variable (the encoder's one trainable variable)."""
    [table] = model.item_encoder.trainable_variables
    return table


# The ranker's layers that read item vectors and never pieces: what a new tokenizer leaves valid.
TOKENIZER_FREE = ("trunk", "click_head", "engagement_head")


def copy_tokenizer_free_layers(served, new) -> None:
    """Copies TOKENIZER_FREE from `served` into `new` (both built)."""
    for name in TOKENIZER_FREE:
        getattr(new, name).set_weights(getattr(served, name).get_weights())


def _built(card: dict, transform_dir: str, config):
    """The ranker of a transform output, its variables made (on two rows of its first day), compiled as the day
    loop compiles it (so its checkpoints have the day loop's shape)."""
    from models.ranker import ranker_optimizer
    from pipeline.stages import day_loop

    model = day_loop.build_ranker(card, config)
    model.compile(optimizer=ranker_optimizer(model, config.learning_rate))
    model(next(iter(day_loop.day_dataset(transform_dir, card["days"][0], 2))))
    return model


def _table_items(sids_dir: str) -> dict:
    from pipeline.core.layout import SidTableLayout
    from pipeline.data import sid_table_io

    table = sid_table_io.read_sid_table(SidTableLayout(sids_dir).table)
    return dict(zip(table.item_ids.tolist(), table.sids))


def run(served_transform: str, served_run_dir: str, new_transform: str, new_run_dir: str, config,
        start_day: int, served_sids: str, new_sids: str, damp: float = 0.1, warm: bool = True) -> dict:
    """Writes a ranker run of the new lineage at `new_run_dir`, trained through `start_day - 1`: warm-started from
    the served ranker, or (`warm=False`) as the day loop initialises a new run, for a cold start on the same budget.

    Args:
      served_transform, served_run_dir: the served lineage's transform output and the ranker run it serves.
      new_transform, new_sids: the new lineage's transform output and SID table; served_sids the served one's
        (unused when it hashes item ids).
      config: the ranker's training config (the served run's; the new run is made from it).
      damp: LSQR's damping of the table rows.

    Returns:
      items fitted, table rows, the reproduced vectors' relative error, the layers copied, the checkpoint.
    """
    from pipeline.core import fingerprint
    from pipeline.core.layout import RankerLayout
    from pipeline.stages import day_loop

    new_card = day_loop.read_protocol_card(new_transform)
    report = _carried_over(served_transform, served_run_dir, new_transform, new_card, config, served_sids, new_sids,
                           damp) if warm else {"items": 0, "relative_error": None, "copied": []}
    tf.keras.utils.set_random_seed(config.seed)  # a cold start is the day loop's own initialisation
    new = _built(new_card, new_transform, config)
    if warm:
        copy_tokenizer_free_layers(report.pop("served"), new)
        item_table(new).assign(report.pop("table"))
    day_loop.run_fingerprint(new_card, config).write(new_run_dir)
    done = tf.Variable(start_day - 1, dtype=tf.int64)
    # Rows the fit gave an item's vector count as looked up (by the items using them); a cold start has none.
    lookups = tf.Variable(report.pop("item_pieces") if warm else np.zeros(new_card["table_rows"], np.int64))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=new, optimizer=new.optimizer, day=done,
                                                             lookups=lookups),
                                         RankerLayout(new_run_dir).checkpoints, max_to_keep=2)
    return {**report, "table_rows": int(new_card["table_rows"]), "checkpoint": manager.save(),
            "trained_through_day": start_day - 1, "warm": warm,
            "fingerprint": fingerprint.read(new_run_dir)["fingerprint"]}


def _carried_over(served_transform: str, served_run_dir: str, new_transform: str, new_card: dict, config,
                  served_sids: str, new_sids: str, damp: float) -> dict:
    """The served ranker (restored) and the new item table fitted to its item vectors, with the fit's numbers."""
    from pipeline.core.layout import RankerLayout
    from pipeline.stages import day_loop

    served_card = day_loop.read_protocol_card(served_transform)
    served = _built(served_card, served_transform, config)
    latest = tf.train.latest_checkpoint(RankerLayout(served_run_dir).checkpoints)
    if latest is None:
        raise FileNotFoundError(f"{served_run_dir}: no checkpoint of the served ranker to warm-start from")
    tf.train.Checkpoint(model=served).restore(latest).expect_partial()
    served_config, new_config = (RepresentationConfig(**c["config"]) for c in (served_card, new_card))
    new_items = _table_items(new_sids)
    old_items = _table_items(served_sids) if served_config.has_sids else None
    ids = np.array(sorted(i for i in new_items if old_items is None or i in old_items), dtype=object)
    if not len(ids):
        raise ValueError(f"no item is in both {served_sids} and {new_sids}: nothing to carry over")
    spm = lambda transform, cfg: day_loop.read_spm_model(transform) if cfg.uses_spm else None  # noqa: E731
    old_pieces = pieces_of(served_config, ids, None if old_items is None else np.stack([old_items[i] for i in ids]),
                           spm(served_transform, served_config))
    new_pieces = pieces_of(new_config, ids, np.stack([new_items[i] for i in ids]), spm(new_transform, new_config))
    targets = item_vectors(item_table(served).numpy(), old_pieces)
    table = fit_table(new_pieces, targets, new_card["table_rows"], damp)
    reproduced = item_vectors(table, new_pieces)
    return {"served": served, "table": table, "items": int(len(ids)),
            "item_pieces": np.bincount(np.concatenate(new_pieces), minlength=new_card["table_rows"]).astype(np.int64),
            "relative_error": float(np.linalg.norm(reproduced - targets) / np.linalg.norm(targets)),
            "copied": list(TOKENIZER_FREE)}
