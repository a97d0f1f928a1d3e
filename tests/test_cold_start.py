"""Instant cold start: an item is scored from its content embedding exactly as from its SID."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from beam_jobs import materialize_sids
from models.rqvae_savedmodel import LoadedRQVAE
from models.sid_tokenizer import SidTokenizer
from pipeline.core import features as fk
from pipeline.core.cards import read_export_card, read_representation
from pipeline.core.contracts import MissingOutputError
from pipeline.core.layout import ExportLayout, RankerLayout, RQVAELayout, RunLayout
from pipeline.core.records import Corpus
from pipeline.core.representation import RepresentationConfig
from pipeline.data import corpus_io, log_io, sid_table_io
from pipeline.sid.serving_examples import ServingExampleBuilder
from pipeline.stages import predict, simulate
from serving import export, server
from serving.model_config import ModelConfig
from serving.servables import Servable
from worlds import IN_MEMORY, SMALL_WORLD, bad_embedding_requests

ROWS = 64


@pytest.fixture(scope="module")
def served(spm_ranker):
    """The newest export of the small sid_spm ranker, loaded, with its representation."""
    path = os.path.join(spm_ranker["export"], str(export.versions(spm_ranker["export"])[-1]))
    loaded = tf.saved_model.load(path)
    return path, loaded, RepresentationConfig(**read_export_card(path)["config"])


@pytest.fixture(scope="module")
def items(run_dir):
    """The SID table, every corpus embedding, and ROWS logged rows of the last day (watch, candidate, history)."""
    sids = sid_table_io.read_sid_table(run_dir.sids + "/table").lookup()
    corpus = corpus_io.read_corpus(run_dir.data.corpus)
    logs = log_io.read_logs(run_dir.data, days=[run_dir.data.days()[-1]])
    rows = ([logs.watch_item_id[r] for r in range(ROWS)], [logs.candidate_item_id[r] for r in range(ROWS)],
            [logs.history(r) for r in range(ROWS)])
    return sids, dict(zip(corpus.item_ids, corpus.embeddings)), rows


def _scores(loaded, records):
    return loaded.signatures["serving_default"](examples=tf.constant(records))[fk.CLICK_PROBABILITY].numpy()


def test_the_export_holds_the_rqvae_that_made_the_sid_table(run_dir, spm_run, spm_ranker, served):
    path, loaded, _ = served
    recorded = read_representation(spm_run["output"])["rqvae"]
    table = sid_table_io.read_sid_table(run_dir.sids + "/table")
    assert recorded["version"] == table.rqvae_version and os.path.isabs(recorded["export"])
    assert export.check_rqvae_version(path) == table.rqvae_version
    with open(ExportLayout(path).rqvae_card) as f:
        assert json.load(f)["rqvae_version"] == table.rqvae_version
    # The training checkpoints stay the ranker's: the RQ-VAE is tracked only while an export is saved.
    checkpoint = tf.train.latest_checkpoint(RankerLayout(spm_ranker["run"]).checkpoints)
    assert checkpoint and not [n for n, _ in tf.train.list_variables(checkpoint) if "sid_tokenizer" in n]


def test_the_tokenizer_gives_the_materialised_sids_and_refuses_changed_weights(run_dir, tmp_path):
    rqvae_dir = os.path.join(RQVAELayout(run_dir.rqvae).export, "1")
    corpus = corpus_io.read_corpus(run_dir.data.corpus)
    table = sid_table_io.read_sid_table(run_dir.sids + "/table").lookup()
    codes = SidTokenizer(rqvae_dir).tokenize(corpus.embeddings)
    np.testing.assert_array_equal(codes, np.stack([table[i] for i in corpus.item_ids]))  # every item, no XLA
    np.testing.assert_array_equal(codes, LoadedRQVAE(rqvae_dir)(corpus.embeddings)["sid"])
    changed = tmp_path / "changed"
    shutil.copytree(rqvae_dir, changed)
    card = json.loads((changed / "assets.extra" / "rqvae.json").read_text())
    card["fingerprint"] = "0" * 64
    (changed / "assets.extra" / "rqvae.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="fingerprint"):
        SidTokenizer(str(changed))


def test_embeddings_instead_of_sids_give_the_same_scores_and_pieces(served, items):
    """Items in the table: only embeddings, only SIDs, or a mix of both score alike (and transform alike)."""
    _, loaded, config = served
    sids, embeddings, (watch, candidate, history) = items
    by_sid = ServingExampleBuilder(config, sids=sids).serialize(watch, candidate, history)
    only_embeddings = ServingExampleBuilder(config, embeddings=embeddings)
    by_embedding = only_embeddings.serialize(watch, candidate, history)
    assert set(only_embeddings.last_embedded) == set(watch) | set(candidate) | {i for h in history for i in h}
    assert not any(only_embeddings.last_missing.values())
    half = {i: s for n, (i, s) in enumerate(sids.items()) if n % 2}  # every other item by SID, the rest by embedding
    mixed = ServingExampleBuilder(config, sids=half, embeddings=embeddings).serialize(watch, candidate, history)
    expected = _scores(loaded, by_sid)
    np.testing.assert_allclose(_scores(loaded, by_embedding), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_scores(loaded, mixed), expected, rtol=1e-6, atol=1e-7)
    oov = ServingExampleBuilder(config).serialize(watch, candidate, history)  # neither: the OOV row
    assert np.abs(_scores(loaded, oov) - expected).max() > 1e-3
    transform = loaded.signatures[export.TRANSFORM_FEATURES]
    labels = {fk.CLICK: [0], fk.ENGAGEMENT: [0.0], fk.DAY: [3], fk.CANDIDATE_FIRST_DAY: [0]}

    def with_labels(record):
        example = tf.train.Example.FromString(record)
        for key, values in labels.items():
            feature = example.features.feature[key]
            (feature.float_list if isinstance(values[0], float) else feature.int64_list).value.extend(values)
        return example.SerializeToString()

    pieces = [transform(examples=tf.constant([with_labels(r) for r in records]))
              for records in (by_sid, by_embedding)]
    for key in (fk.WATCH_PIECES, fk.CANDIDATE_PIECES, fk.HISTORY_PIECES):
        np.testing.assert_array_equal(pieces[0][key].numpy(), pieces[1][key].numpy(), err_msg=key)


def test_an_item_missing_from_the_table_scores_as_after_it_is_materialised(run_dir, served, items, tmp_path):
    """Materialise the corpus without 5 items; score them from embeddings; add them (incremental job); by SID."""
    _, loaded, config = served
    _, embeddings, (watch, candidate, history) = items
    corpus = corpus_io.read_corpus(run_dir.data.corpus)
    newcomers = list(dict.fromkeys(candidate))[:5]
    before = np.isin(corpus.item_ids, newcomers, invert=True)
    partial_corpus = str(tmp_path / "corpus_before.parquet")
    corpus_io.write_corpus(partial_corpus, Corpus(corpus.item_ids[before], corpus.embeddings[before],
                                                  corpus.first_day[before]))
    model = RQVAELayout(run_dir.rqvae).export
    materialize_sids.run(materialize_sids.MaterializeConfig(corpus=partial_corpus, model=model,
                                                            output=str(tmp_path / "sids_before")), IN_MEMORY)
    materialize_sids.run(materialize_sids.MaterializeConfig(corpus=run_dir.data.corpus, model=model,
                                                            output=str(tmp_path / "sids_after"),
                                                            existing_table=str(tmp_path / "sids_before")), IN_MEMORY)
    table_before, table_after = (sid_table_io.read_sid_table(str(tmp_path / name / "table")).lookup()
                                 for name in ("sids_before", "sids_after"))
    assert not set(newcomers) & set(table_before) and set(newcomers) <= set(table_after)
    rows = [r for r, c in enumerate(candidate) if c in newcomers]
    request = ([watch[r] for r in rows], [candidate[r] for r in rows], [history[r] for r in rows])
    builder = ServingExampleBuilder(config, sids=table_before,
                                    embeddings={i: e for i, e in embeddings.items() if i not in table_before})
    from_embeddings = _scores(loaded, builder.serialize(*request))
    assert set(builder.last_embedded) >= set(request[1]) and not builder.last_missing[fk.CANDIDATE_SID]
    after = _scores(loaded, ServingExampleBuilder(config, sids=table_after).serialize(*request))
    np.testing.assert_allclose(from_embeddings, after, rtol=1e-6, atol=1e-7)
    oov = _scores(loaded, ServingExampleBuilder(config, sids=table_before).serialize(*request))
    assert np.abs(oov - after).max() > 1e-3  # without the embedding the newcomer would get the OOV row


def test_bad_embeddings_are_refused_naming_the_feature(served, items):
    _, loaded, config = served
    sids, _, (watch, candidate, history) = items
    [record] = ServingExampleBuilder(config, sids=sids).serialize(watch[:1], candidate[:1], history[:1])
    for case, bad, key in bad_embedding_requests(record, config.embedding_dim):
        with pytest.raises(tf.errors.InvalidArgumentError, match=key):
            _scores(loaded, [record, bad])


def test_exports_check_the_rqvae_version(spm_run, served, tmp_path):
    path, _, _ = served
    transform_dir = tmp_path / "transform"
    os.makedirs(transform_dir)
    card = read_representation(spm_run["output"])
    stale = dict(card, rqvae=dict(card["rqvae"], version="9-000000000000"))
    (transform_dir / "representation.json").write_text(json.dumps(stale))
    with pytest.raises(ValueError, match="9-000000000000"):
        export.sid_tokenizer_for(str(transform_dir))
    with pytest.raises(MissingOutputError, match="RQ-VAE export"):
        export.sid_tokenizer_for(spm_run["output"], rqvae_export=str(tmp_path / "moved"))
    (transform_dir / "representation.json").write_text(json.dumps({k: v for k, v in card.items() if k != "rqvae"}))
    with pytest.raises(ValueError, match="sidrec transform"):
        export.sid_tokenizer_for(str(transform_dir))
    # A server refuses an export whose RQ-VAE is not its table's.
    tampered = tmp_path / "export" / "1"
    shutil.copytree(path, tampered)
    rqvae_card = json.loads((tampered / "assets.extra" / "rqvae.json").read_text())
    (tampered / "assets.extra" / "rqvae.json").write_text(json.dumps(dict(rqvae_card, rqvae_version="9-0")))
    with pytest.raises(ValueError, match="holds RQ-VAE 9-0"):
        Servable("ranker", 1, str(tampered))


def test_predict_sends_embeddings_for_items_that_arrived_after_materialisation(run_dir, spm_ranker, spm_run, tmp_path):
    """`sidrec predict` over gRPC: two new items ranked among a user's candidates, from their embeddings."""
    layout = RunLayout(str(tmp_path / "run"))
    os.makedirs(layout.transform)
    os.symlink(run_dir.data.root, layout.data.root)
    os.symlink(run_dir.sids, layout.sids)
    os.symlink(spm_run["output"], layout.transform_output("sid_spm_300"))
    arrivals = simulate.write_arrivals(SMALL_WORLD, layout, 2)
    arrived = corpus_io.read_corpus(layout.data.arrivals)
    assert list(arrived.item_ids) == list(arrivals.item_ids) and (arrived.first_day == SMALL_WORLD.num_days + 1).all()
    running = server.start([ModelConfig("ranker", spm_ranker["export"])])
    try:
        results = predict.run(layout, predict.PredictConfig(
            server=f"127.0.0.1:{running.port}", representation="sid_spm_300", users=2,
            also_rank=tuple(arrivals.item_ids),
            corpus=layout.data.arrivals))
    finally:
        running.stop()
    for result in results:
        assert set(arrivals.item_ids) <= {r.item_id for r in result["ranked"]}
        assert result["embedded"] == list(arrivals.item_ids) and not result["missing"]
    text = predict.describe(results)
    assert "2 item(s) missing from the SID table sent as content embeddings" in text
