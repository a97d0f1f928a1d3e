"""Prefix N-grams, SPM with trained fall-back pieces, and SID plus an ID table: pieces by hand, parity
with a plain-Python reference on every item, and training through the day loop."""

import dataclasses

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf

from pipeline.core import features as fk
from pipeline.core.representation import RepresentationConfig, representation_name, split_kind
from pipeline.core.cards import read_sid_stats
from pipeline.data import sid_table_io
from pipeline.sid import lookup_stats, sid_text, spm_dropout
from pipeline.sid.preprocessing import item_pieces, make_preprocessing_fn
from pipeline.stages import day_loop, experiment
from worlds import run_transform

MASK = (1 << 64) - 1


def reference_prefix_pieces(sid: list[int], lengths, buckets: int, oov: int) -> list[int]:
    """sid_prefix in plain Python: a running polynomial of codes + 1, splitmix64 of it XOR the length, mod B."""
    if any(c < 0 for c in sid):
        return [oov]
    pieces, spread = [], 0
    for length, code in enumerate(sid, start=1):
        spread = (spread * 0x9E3779B97F4A7C15 + code + 1) & MASK
        if length in lengths:
            z = spread ^ length
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
            pieces.append((z ^ (z >> 31)) % buckets)
    return pieces


def _pieces(config, sids, item_ids, spm_model=None) -> list[list[int]]:
    ragged = item_pieces(tf.constant(np.asarray(sids, np.int64)), tf.constant(item_ids), config, spm_model)
    return ragged.to_list()


def test_prefix_pieces_by_hand():
    config = RepresentationConfig(kind="sid_prefix", buckets=1000, num_levels=4, codebook_size=16)
    assert config.table_rows == 1001 and config.oov_piece == 1000 and config.lengths == (1, 2, 3, 4)
    # [1]: spread 1 + 1 = 2; splitmix64(2 XOR length 1 = 3) = 0x1E535EEDE31428F0 (numpy's uint64 gives the same).
    assert reference_prefix_pieces([1, 2, 3, 4], (1,), 1 << 64, -1) == [0x1E535EEDE31428F0]
    assert _pieces(config, [[1, 5, 5, 5]], ["x"])[0][0] == 0x1E535EEDE31428F0 % 1000
    a, b, missing = _pieces(config, [[1, 2, 3, 4], [1, 2, 9, 9], [-1] * 4], ["a", "b", "c"])
    assert a == reference_prefix_pieces([1, 2, 3, 4], (1, 2, 3, 4), 1000, 1000)
    assert a[:2] == b[:2] and a[2:] != b[2:]  # a shared prefix is a shared piece; the finer ones differ
    assert missing == [1000]  # without a SID: the OOV row, one lookup
    chosen = dataclasses.replace(config, prefix_lengths=(1, 3))
    assert chosen.name == "sid_prefix_1000_l13"
    assert _pieces(chosen, [[1, 2, 3, 4]], ["a"]) == [[a[0], a[2]]]
    with pytest.raises(ValueError, match="prefix_lengths"):
        RepresentationConfig(kind="sid_prefix", prefix_lengths=(3, 1))


def test_hybrid_adds_one_id_piece_after_the_sid_rows():
    kind, hybrid = split_kind("sid_ngram+id")
    config = RepresentationConfig(kind=kind, ngram=1, num_levels=4, codebook_size=4, id_buckets=10)
    assert hybrid and config.name == representation_name("sid_ngram+id", ngram=1, id_buckets=10) == "sid_1gram+id_10"
    assert (config.sid_rows, config.table_rows, config.oov_piece) == (17, 27, 16)
    ids = tf.strings.to_hash_bucket_fast(["w1", "c1"], 10).numpy()
    known, missing = _pieces(config, [[1, 2, 3, 0], [-1] * 4], ["w1", "c1"])
    assert known == [1, 6, 11, 12, 17 + ids[0]] and missing == [16] * 4 + [17 + ids[1]]  # an item without a SID keeps its ID row
    assert lookup_stats.pieces_per_item(config, np.zeros((3, 4), np.int64)).tolist() == [5, 5, 5]
    with pytest.raises(ValueError, match="SID kind"):
        RepresentationConfig(kind="random_hash", id_buckets=10)
    # Through the preprocessing_fn, the history's items get theirs too.
    out = make_preprocessing_fn(config)({
        fk.WATCH_ITEM_ID: tf.constant(["w1"]), fk.CANDIDATE_ITEM_ID: tf.constant(["c1"]),
        fk.HISTORY_ITEM_IDS: tf.ragged.constant([["w1", "c1"]]).to_sparse(), fk.CLICK: tf.constant([1], tf.int64),
        fk.ENGAGEMENT: tf.constant([0.5]), fk.DAY: tf.constant([3], tf.int64),
        fk.CANDIDATE_FIRST_DAY: tf.constant([3], tf.int64), fk.USER_ID: tf.constant(["u"]),
        fk.WATCH_SID: tf.constant([[1, 2, 3, 0]], tf.int64), fk.CANDIDATE_SID: tf.constant([[-1] * 4], tf.int64),
        fk.HISTORY_SIDS: tf.ragged.constant([[1, 2, 3, 0, -1, -1, -1, -1]], tf.int64).to_sparse()})
    assert out[fk.HISTORY_PIECES].values.numpy().tolist() == known + missing


def test_in_graph_pieces_equal_the_plain_python_reference_on_every_item(run_dir, spm_run):
    """Every item of the test world, through the same graph code TF Transform traces."""
    table = sid_table_io.read_sid_table(run_dir.sids + "/table")
    ids, sids = list(table.item_ids), table.sids
    levels, codes = sids.shape[1], read_sid_stats(run_dir.sids)["codebook_size"]
    with open(spm_run["output"] + "/spm/sid_spm.model", "rb") as f:
        model = f.read()
    processor = spm.SentencePieceProcessor(model_proto=model)
    spm_reference = processor.encode(sid_text.sid_text(sids, codes))
    id_rows = tf.strings.to_hash_bucket_fast(ids, 64).numpy().tolist()  # the random-hash op random_hash uses
    for kind, fields in (("sid_prefix", {"buckets": 4096}), ("sid_prefix", {"buckets": 512, "prefix_lengths": (2, 4)}),
                         ("sid_spm", {"vocab_size": 300}), ("sid_prefix+id", {"buckets": 4096, "id_buckets": 64}),
                         ("sid_spm+id", {"vocab_size": 300, "id_buckets": 64})):
        base, hybrid = split_kind(kind)
        config = RepresentationConfig(kind=base, num_levels=levels, codebook_size=codes, **fields)
        found = _pieces(config, sids, ids, model)
        expected = (spm_reference if config.uses_spm else
                    [reference_prefix_pieces(s.tolist(), config.lengths, config.buckets, config.oov_piece) for s in sids])
        if hybrid:
            expected = [e + [config.sid_rows + i] for e, i in zip(expected, id_rows)]
        assert found == [list(e) for e in expected], kind
        assert max(max(p) for p in found) < config.table_rows


def test_splits_are_the_fewest_shorter_pieces_longest_first():
    vocabulary = {"a": 1, "b": 2, "c": 3, "d": 4, "ab": 5, "abc": 6, "cd": 7, "abcd": 8, "bcd": 9}
    assert spm_dropout._fewest_shorter_pieces("abcd", vocabulary) == [6, 4]  # abc+d, ab+cd, a+bcd: the longest first
    assert spm_dropout._fewest_shorter_pieces("abc", vocabulary) == [5, 3]
    assert spm_dropout._fewest_shorter_pieces("ab", vocabulary) == [1, 2]
    assert spm_dropout._fewest_shorter_pieces("x", vocabulary) is None


def test_spm_dropout_keeps_the_pieces_at_zero_and_splits_every_piece_at_one(run_dir, spm_run):
    with open(spm_run["output"] + "/spm/sid_spm.model", "rb") as f:
        model = f.read()
    config = RepresentationConfig(kind="sid_spm", vocab_size=300, num_levels=4, codebook_size=16)
    splits = spm_dropout.piece_splits(model)
    processor = spm.SentencePieceProcessor(model_proto=model)
    for piece, split in enumerate(splits):  # a split spells its piece with shorter pieces, or is the piece itself
        assert "".join(processor.id_to_piece(p) for p in split) == processor.id_to_piece(piece)
        assert split == [piece] or all(len(processor.id_to_piece(p)) < len(processor.id_to_piece(piece)) for p in split)
    items = [[5, 17, 40], [299, 300], [120]]  # 300: the OOV row, never split
    pieces = tf.ragged.constant(items, dtype=tf.int64).to_sparse()
    table = spm_dropout.split_table(config, model)
    seed = tf.constant([7, 1], tf.int64)
    kept = spm_dropout.drop_pieces(pieces, table, 0.0, seed)
    assert tf.RaggedTensor.from_sparse(kept).to_list() == items
    split = tf.RaggedTensor.from_sparse(spm_dropout.drop_pieces(pieces, table, 1.0, seed)).to_list()
    assert split == [[q for p in item for q in (splits[p] if p < len(splits) else [p])] for item in items]
    half = [tf.RaggedTensor.from_sparse(spm_dropout.drop_pieces(pieces, table, 0.5, tf.constant(s, tf.int64))).to_list()
            for s in ([1, 2], [1, 2], [3, 4])]
    assert half[0] == half[1]  # deterministic per seed
    assert half[0] != half[2] or all(len(splits[p]) == 1 for item in items for p in item if p < len(splits))
    # Figure 4 in training: at p = 1 an item counts its pieces' splits.
    sids = sid_table_io.read_sid_table(run_dir.sids + "/table").sids[:50]
    plain = processor.encode(sid_text.sid_text(sids, 16))
    expected = [sum(len(splits[p]) for p in item) for item in plain]
    assert lookup_stats.pieces_per_item(config, sids, model, spm_dropout=1.0).tolist() == expected
    assert lookup_stats.pieces_per_item(config, sids, model).tolist() == [len(item) for item in plain]


def test_new_representations_train_through_the_day_loop_and_the_experiment(run_dir, spm_run, spm_ranker, tmp_path):
    """A prefix hybrid and SPM with dropout train and evaluate; the experiment parses and names their arms."""
    prefix = run_transform(run_dir, "sid_prefix+id", buckets=256, id_buckets=64)
    assert prefix["config"].name == "sid_prefix_256+id_64" and prefix["config"].table_rows == 257 + 64
    config = day_loop.TrainConfig(batch_size=256, hidden_dims=(16,), embedding_dim=8)  # spm_ranker's
    histories = {}
    for transform_dir, train_config in ((prefix["output"], config),
                                        (spm_run["output"], dataclasses.replace(config, spm_dropout=0.5))):
        history = day_loop.train(transform_dir, str(tmp_path / transform_dir.replace("/", "_")), train_config,
                                 log=lambda *_: None, export_every_day=False)
        assert [e["evaluated_on_day"] for e in history] == [2, 3] and all(0 < e["ctr_auc"] < 1 for e in history)
        histories[transform_dir] = history
    # The same seed, data and config as spm_ranker but for the dropout: training (not evaluation) saw other
    # pieces, so the models differ from the first evaluation on (without dropout the runs are identical).
    plain, dropped_history = spm_ranker["history"][0], histories[spm_run["output"]][0]
    assert abs(plain["ctr_auc"] - dropped_history["ctr_auc"]) > 1e-4
    assert plain["examples"] == dropped_history["examples"]  # the same day evaluated
    dropped = dataclasses.replace(config, spm_dropout=0.5)
    assert day_loop.run_label("sid_spm_300", dropped) == "sid_spm_300_dropout0.5"
    assert day_loop.run_dir_name("sid_spm_300", config) != day_loop.run_dir_name("sid_spm_300", dropped)
    with pytest.raises(ValueError, match="sid_spm pieces"):
        day_loop.train(prefix["output"], str(tmp_path / "refused"), dropped, log=lambda *_: None)
    arms = experiment.parse_arms("random_hash:256,sid_prefix+id:256:ids=64,sid_spm:300:dropout=0.5,sid_spm+id:300")
    assert [a.label for a in arms] == ["random_hash_256", "sid_prefix_256+id_64", "sid_spm_300_dropout0.5",
                                       "sid_spm_300+id_1024"]
    with pytest.raises(ValueError, match="not an option of sid_ngram"):
        experiment.parse_arms("sid_ngram:2:dropout=0.1")
