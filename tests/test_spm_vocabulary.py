"""SentencePiece vocabulary at demo scale, and lookups per item by popularity (Figure 4)."""

import dataclasses

import numpy as np
import pytest

from models.rqvae import RQVAEConfig
from pipeline.sid import lookup_stats
from pipeline.stages import train_rqvae as rqvae_job
from pipeline.sid import spm_vocab
from pipeline.core.representation import RepresentationConfig
from pipeline.data.simulator import SimulatorConfig, simulate


@pytest.fixture(scope="module")
def demo_sids():
    """Demo-scale impressions (days 1-9) and SIDs from an RQ-VAE at the demo's L=4, K=256."""
    data = simulate(SimulatorConfig())
    config = dataclasses.replace(RQVAEConfig(), max_epochs=8)
    model, _ = rqvae_job.train(data.embeddings[data.first_day == 0], config, lambda *_: None)
    sids = rqvae_job.encode(model, data.embeddings)
    training = data.day <= 9
    impressions = np.bincount(data.candidate[training], minlength=len(sids))
    impressed = impressions > 0
    return sids[impressed], impressions[impressed]


def _per_sid(sids, impressions):
    uniq, inverse = np.unique(sids, axis=0, return_inverse=True)
    return uniq, np.bincount(inverse.ravel(), weights=impressions).astype(np.int64)


def test_vocabulary_reaches_the_requested_size(demo_sids):
    import sentencepiece as spm

    uniq, counts = _per_sid(*demo_sids)
    for vocab_size in (2048, 8192, 32768):
        model = spm_vocab.train_sid_spm(uniq, counts, 256, vocab_size)
        assert spm.SentencePieceProcessor(model_proto=model).get_piece_size() == vocab_size


def test_a_vocabulary_the_data_cannot_support_is_refused_with_the_nearest_that_works(demo_sids):
    uniq, counts = _per_sid(*demo_sids)
    with pytest.raises(ValueError, match=r"vocab_size 262144 is more than .* at most (\d+) pieces") as err:
        spm_vocab.train_sid_spm(uniq, counts, 256, 262_144)
    supported = int(str(err.value).split("at most ")[1].split(" ")[0])
    assert 8192 < supported < 262_144
    assert err.value.supported == supported and isinstance(err.value, spm_vocab.VocabularyTooLarge)
    with pytest.raises(spm_vocab.VocabularyTooSmall,
                       match=r"vocab_size 1000 is too small: the SIDs use 10\d\d \(level, code\) symbols") as err:
        spm_vocab.train_sid_spm(uniq, counts, 256, 1000)
    symbols = sum(len(np.unique(uniq[:, level])) for level in range(uniq.shape[1]))
    assert err.value.supported == symbols + 1  # the smallest vocabulary that works


def test_head_items_get_fewer_pieces_than_tail_items(demo_sids):
    sids, impressions = demo_sids
    uniq, counts = _per_sid(sids, impressions)
    config = RepresentationConfig(kind="sid_spm", vocab_size=8192, num_levels=4, codebook_size=256)
    model = spm_vocab.train_sid_spm(uniq, counts, 256, 8192)
    stats = lookup_stats.lookup_stats(config, impressions, sids, model)
    assert stats["head"]["mean_lookups_per_item"] < stats["tail"]["mean_lookups_per_item"]
    assert 1 <= stats["head"]["mean_lookups_per_item"] and stats["tail"]["mean_lookups_per_item"] <= 4
    ngram = lookup_stats.lookup_stats(RepresentationConfig(kind="sid_ngram", ngram=2, num_levels=4,
                                                           codebook_size=256), impressions, sids)
    assert ngram["head"]["mean_lookups_per_item"] == ngram["tail"]["mean_lookups_per_item"] == 2


def test_popularity_buckets_by_hand():
    # Mass 12, by impressions: item 1 (6) starts at 0 -> head; item 2 (2) at 6/12 -> torso;
    # item 4 (2) at 8/12, item 0 at 10/12, item 3 at 11/12 -> tail.
    buckets = lookup_stats.popularity_buckets(np.array([1, 6, 2, 1, 2]))
    assert buckets.tolist() == [2, 0, 1, 2, 2]


def test_in_graph_pieces_equal_the_library_for_every_demo_item(demo_sids):
    import sentencepiece as spm
    import tensorflow as tf

    from pipeline.sid import sid_text
    from pipeline.sid.preprocessing import spm_pieces

    sids, impressions = demo_sids
    uniq, counts = _per_sid(sids, impressions)
    model = spm_vocab.train_sid_spm(uniq, counts, 256, 8192)
    config = RepresentationConfig(kind="sid_spm", vocab_size=8192, num_levels=4, codebook_size=256)
    in_graph = spm_pieces(tf.constant(sids), config, model).to_list()
    library = spm.SentencePieceProcessor(model_proto=model).encode(sid_text.sid_text(sids, 256))
    assert len(in_graph) == len(sids) > 10_000
    assert in_graph == library
