"""preprocessing_fn through a real AnalyzeAndTransformDataset, against pieces worked out by hand."""

import tempfile

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from pipeline.core import features as fk
from pipeline.sid import sid_text
from pipeline.sid import spm_vocab
from pipeline.sid.preprocessing import make_preprocessing_fn, raw_feature_spec, spm_pieces
from pipeline.core.representation import RepresentationConfig

L, K = 4, 4


def _row(watch, candidate, history, watch_sid, candidate_sid, history_sids, first_day=3, day=3):
    return {fk.WATCH_ITEM_ID: watch, fk.CANDIDATE_ITEM_ID: candidate, fk.HISTORY_ITEM_IDS: history,
            fk.CLICK: 1, fk.ENGAGEMENT: 0.5, fk.DAY: day, fk.CANDIDATE_FIRST_DAY: first_day, fk.USER_ID: "u1",
            fk.WATCH_SID: watch_sid, fk.CANDIDATE_SID: candidate_sid,
            fk.HISTORY_SIDS: [c for sid in history_sids for c in sid]}


ROWS = [
    _row("w1", "c1", ["h1", "h2"], [1, 2, 3, 0], [0, 0, 0, 1], [[1, 2, 3, 0], [0, 0, 0, 1]]),
    _row("w2", "c2", [], [3, 3, 3, 3], [-1, -1, -1, -1], [], first_day=1),  # candidate without a SID
]


def _transform(config, rows=ROWS, spm_model=None, known_sids=None):
    spec = raw_feature_spec(config)
    rows = [{k: v for k, v in r.items() if k in spec} for r in rows]
    metadata = tft.DatasetMetadata.from_feature_spec(spec)
    with tft_beam.Context(temp_dir=tempfile.mkdtemp()):
        (out, _), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            make_preprocessing_fn(config, spm_model, known_sids))
    return out


def _as_list(value):
    return np.asarray(value).ravel().tolist()


def test_unigram_pieces_by_hand():
    config = RepresentationConfig(kind="sid_ngram", ngram=1, num_levels=L, codebook_size=K)
    assert config.table_rows == 17 and config.oov_piece == 16
    first, second = _transform(config)
    # Piece j of code c is j*K + c.
    assert _as_list(first[fk.WATCH_PIECES]) == [1, 6, 11, 12]
    assert _as_list(first[fk.CANDIDATE_PIECES]) == [0, 4, 8, 13]
    assert _as_list(first[fk.HISTORY_PIECES]) == [1, 6, 11, 12, 0, 4, 8, 13]
    assert first[fk.HISTORY_LENGTH] == 2 and second[fk.HISTORY_LENGTH] == 0
    assert _as_list(second[fk.WATCH_PIECES]) == [3, 7, 11, 15]
    assert _as_list(second[fk.CANDIDATE_PIECES]) == [16, 16, 16, 16]  # the OOV row
    assert _as_list(second[fk.HISTORY_PIECES]) == []
    assert first[fk.COLD_START] == 1 and second[fk.COLD_START] == 0
    assert first[fk.CLICK] == 1 and first[fk.ENGAGEMENT] == pytest.approx(0.5)


def test_bigram_pieces_by_hand():
    config = RepresentationConfig(kind="sid_ngram", ngram=2, num_levels=L, codebook_size=K)
    assert config.table_rows == 2 * K ** 2 + 1
    first, second = _transform(config)
    # Groups (1, 2) and (3, 0): 1*4 + 2 = 6, then 16 + 3*4 + 0 = 28.
    assert _as_list(first[fk.WATCH_PIECES]) == [6, 28]
    assert _as_list(first[fk.CANDIDATE_PIECES]) == [0, 17]
    assert _as_list(first[fk.HISTORY_PIECES]) == [6, 28, 0, 17]
    assert _as_list(second[fk.WATCH_PIECES]) == [15, 31]
    assert _as_list(second[fk.CANDIDATE_PIECES]) == [32, 32]


def test_random_hash_pieces_share_one_table():
    config = RepresentationConfig(kind="random_hash", buckets=1000)
    rows = [_row("a", "b", ["b", "a", "c"], [0] * 4, [0] * 4, []), _row("b", "a", ["a"], [0] * 4, [0] * 4, [])]
    first, second = _transform(config, rows)
    expected = {i: int(tf.strings.to_hash_bucket_fast(i, 1000)) for i in "abc"}
    assert _as_list(first[fk.WATCH_PIECES]) == [expected["a"]]
    assert _as_list(first[fk.CANDIDATE_PIECES]) == [expected["b"]]
    assert _as_list(first[fk.HISTORY_PIECES]) == [expected["b"], expected["a"], expected["c"]]
    # The same item lands on the same row wherever it appears.
    assert _as_list(second[fk.WATCH_PIECES]) == _as_list(first[fk.CANDIDATE_PIECES])
    assert len(set(expected.values())) == 3 and all(0 <= v < 1000 for v in expected.values())


def test_dense_passes_the_embeddings_through():
    config = RepresentationConfig(kind="dense", embedding_dim=3)
    rows = [dict(_row("a", "b", [], [0] * 4, [0] * 4, []), **{fk.WATCH_EMBEDDING: [1.0, 2.0, 3.0],
                                                              fk.CANDIDATE_EMBEDDING: [0.5, 0.0, -1.0]})]
    [out] = _transform(config, rows)
    np.testing.assert_allclose(out[fk.WATCH_EMBEDDING], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(out[fk.CANDIDATE_EMBEDDING], [0.5, 0.0, -1.0])
    assert fk.WATCH_PIECES not in out


def test_sid_text_is_the_same_in_numpy_and_in_the_graph():
    sids = np.array([[0, 1, 2, 3], [3, 3, 0, 0]])
    text = sid_text.sid_text(sids, K)
    assert len(text[0]) == L and len(set("".join(text))) == 8  # one symbol per (level, code) pair
    assert [t.decode() for t in sid_text.sid_text_tf(tf.constant(sids), K).numpy()] == text
    with pytest.raises(ValueError, match="do not fit"):
        sid_text.sid_text(np.zeros((1, 40)), 2048)


def test_in_graph_spm_pieces_equal_the_sentencepiece_library():
    rng = np.random.default_rng(0)
    # Skewed SIDs: a few popular prefixes, so multi-code pieces exist.
    sids = np.concatenate([np.tile([[1, 2, 3, 0]], (300, 1)), rng.integers(0, K, (500, L))])
    texts = sid_text.sid_text(sids, K)
    uniq, counts = np.unique(sids, axis=0, return_counts=True)
    model = spm_vocab.train_sid_spm(uniq, counts, K, vocab_size=40)
    config = RepresentationConfig(kind="sid_spm", vocab_size=40, num_levels=L, codebook_size=K)
    in_graph = spm_pieces(tf.constant(sids), config, model)
    processor = spm.SentencePieceProcessor(model_proto=model)
    assert processor.get_piece_size() == 40  # the table size asked for is reached
    for row, text in enumerate(texts):
        assert in_graph[row].numpy().tolist() == processor.encode(text)
    assert max(len(p) for p in processor.encode(texts)) <= L
    # The popular SID is one piece; items without a SID get the OOV row.
    assert len(processor.encode(texts[0])) == 1
    missing = spm_pieces(tf.constant([[-1, -1, -1, -1]]), config, model)
    assert missing[0].numpy().tolist() == [config.oov_piece]


def test_too_large_vocabulary_gets_a_clear_message():
    sids = np.array([[0, 1, 2, 3], [0, 1, 2, 2]])
    with pytest.raises(ValueError, match=r"vocab_size 5000 is more than the 2 SIDs .* at most \d+ pieces"):
        spm_vocab.train_sid_spm(sids, np.array([5, 1]), K, vocab_size=5000)


def test_spm_representation_runs_inside_tf_transform():
    sids = np.array([[1, 2, 3, 0], [0, 0, 0, 1], [3, 3, 3, 3], [1, 2, 0, 0]])
    model = spm_vocab.train_sid_spm(sids, np.array([50, 20, 5, 1]), K, vocab_size=24)
    config = RepresentationConfig(kind="sid_spm", vocab_size=24, num_levels=L, codebook_size=K)
    processor = spm.SentencePieceProcessor(model_proto=model)
    encode = lambda sid: processor.encode(sid_text.sid_text(np.array([sid]), K)[0])  # noqa: E731
    # Tokenized in the graph, or held in its table for the SID table's SIDs ([0, 0, 0, 1] left out: tokenized).
    for known in (None, sids[[0, 2, 3]]):
        first, second = _transform(config, spm_model=model, known_sids=known)
        assert _as_list(first[fk.WATCH_PIECES]) == encode([1, 2, 3, 0])
        assert _as_list(first[fk.HISTORY_PIECES]) == encode([1, 2, 3, 0]) + encode([0, 0, 0, 1])
        assert _as_list(second[fk.CANDIDATE_PIECES]) == [config.oov_piece]
    assert config.table_rows == 25


@pytest.mark.parametrize("levels, codebook", [(4, 256), (8, 2048)])  # packed keys; fingerprints (88 bits)
def test_known_pieces_equal_the_tokenizers(levels, codebook):
    """The table of known SIDs gives the tokenizer's pieces, for known SIDs, SIDs it lacks and items without a SID,
    in any mix; with fingerprints, a SID whose key is in the table but whose codes differ is tokenized."""
    from pipeline.sid import known_pieces
    from pipeline.sid.preprocessing import known_spm_pieces

    rng = np.random.default_rng(levels)
    sids = np.concatenate([rng.integers(0, 8, (3000, levels // 2)), rng.integers(0, 32, (3000, levels // 2))], 1)
    uniq, counts = np.unique(sids, axis=0, return_counts=True)
    model = spm_vocab.train_sid_spm(uniq, counts, codebook, vocab_size=600)
    config = RepresentationConfig(kind="sid_spm", vocab_size=600, num_levels=levels, codebook_size=codebook)
    known = known_spm_pieces(sids[:2000], config, model)
    assert known.packed == (levels * 11 <= 63) and known.size == len(np.unique(sids[:2000], axis=0))
    queries = np.concatenate([sids, -np.ones((5, levels), np.int64), sids[:5] * 0 + codebook - 1])
    rng.shuffle(queries)
    assert (spm_pieces(tf.constant(queries), config, model, known).to_list()
            == spm_pieces(tf.constant(queries), config, model).to_list())
    # The table is what answers for known SIDs: pieces altered in it come out altered.
    shifted = known_pieces.KnownPieces(codebook, known.keys, known.sids,
                                       np.where(known.padded >= 0, known.padded + 1, known.padded), known.lengths)
    plain = spm_pieces(tf.constant(sids[:50]), config, model).to_list()
    assert spm_pieces(tf.constant(sids[:50]), config, model, shifted).to_list() == [[p + 1 for p in row]
                                                                                 for row in plain]
    if not known.packed:  # a table whose stored codes differ from the query's under the same key
        forged = known_pieces.KnownPieces(codebook, known.keys, (known.sids + 1) % codebook, known.padded * 0,
                                          known.lengths)
        assert (spm_pieces(tf.constant(sids[:50]), config, model, forged).to_list()
                == spm_pieces(tf.constant(sids[:50]), config, model).to_list())
