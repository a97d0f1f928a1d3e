"""`sidrec predict`: rank logged candidates of a few users of one day through a running gRPC server.

For a SID representation, items missing from the SID table (arrived after the last materialisation)
are sent with their content embedding from the corpus, and the served export computes their SIDs with
the frozen RQ-VAE it holds (serving.cold_start); the output says which items went that way.
"""


import grpc
import numpy as np

from pipeline.core.cards import read_representation
from pipeline.core.layout import RunLayout, SidTableLayout
from pipeline.core.representation import RepresentationConfig
from pipeline.data import corpus_io, log_io, sid_table_io
from pipeline.sid.serving_examples import ServingExampleBuilder
from serving.client import RankerClient
from pipeline.stages.configs import PredictConfig  # noqa: F401  (re-exported)


def builder_for_run(layout: RunLayout, card: dict, corpus_path: str = "") -> ServingExampleBuilder:
    """A request builder with what a representation joins, read from a run.

    SID kinds: the SID table, and the content embeddings of the corpus's items missing from it. Dense:
    the corpus's embeddings.

    Args:
      card: the representation card the served export was trained on (its transform output's).
      corpus_path: the corpus to read embeddings from (default: the run's).

    Raises:
      ValueError: the SID table holds SIDs of another RQ-VAE than the one the export was trained on.
    """
    config = RepresentationConfig(**card["config"])
    corpus_path = corpus_path or layout.data.corpus
    if config.has_sids:
        table = sid_table_io.read_sid_table(SidTableLayout(layout.sids).table)
        trained_on = (card.get("rqvae") or {}).get("version")
        if trained_on and table.rqvae_version != trained_on:
            raise ValueError(f"{layout.sids}: SIDs of RQ-VAE {table.rqvae_version}, but {config.name} was trained on "
                             f"SIDs of RQ-VAE {trained_on}: its requests would carry codes it never saw")
        sids = table.lookup()
        corpus = corpus_io.read_corpus(corpus_path, embedding_dim=config.embedding_dim)
        unknown = {i: e for i, e in zip(corpus.item_ids, corpus.embeddings) if i not in sids}
        return ServingExampleBuilder(config, sids=sids, embeddings=unknown)
    if config.is_dense:
        corpus = corpus_io.read_corpus(corpus_path, embedding_dim=config.embedding_dim)
        return ServingExampleBuilder(config, embeddings=dict(zip(corpus.item_ids, corpus.embeddings)))
    return ServingExampleBuilder(config)


def run(layout: RunLayout, config: PredictConfig) -> list[dict]:
    """One ranking per user: their last watch and history of the day, with the candidates they were shown."""
    builder = builder_for_run(layout, read_representation(layout.transform_output(config.representation)),
                              config.corpus)
    day = config.day or layout.data.logged_days()[-1]
    logs = log_io.read_logs(layout.data, days=[day])
    users = [config.user] if config.user else list(dict.fromkeys(logs.user_id))[:config.users]
    client = RankerClient(config.server)
    results = []
    try:
        for user in users:
            rows = np.flatnonzero(logs.user_id == user)
            if not len(rows):
                raise ValueError(f"user {user!r} has no impressions on day {day}")
            last = rows[-1]
            watch, history = logs.watch_item_id[last], logs.history(last)
            candidates = list(dict.fromkeys((list(config.candidates) or list(logs.candidate_item_id[rows]))
                                            + list(config.also_rank)))
            ranked = _rank(client, config, builder, watch, candidates, history)
            results.append({"user": user, "day": day, "watch": watch, "history": history, "candidates": candidates,
                            "ranked": ranked, "clicked": set(logs.candidate_item_id[rows][logs.click[rows] == 1]),
                            "missing": {k: v for k, v in builder.last_missing.items() if v},
                            "embedded": builder.last_embedded})
    finally:
        client.close()
    return results


def _rank(client: RankerClient, config: PredictConfig, builder, watch, candidates, history):
    """The server's ranking; a server that is not there or refuses the request is a one-line error."""
    try:
        return client.rank(config.model_name, builder, watch, candidates, history)
    except grpc.RpcError as e:
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise ConnectionError(f"no server answering at {config.server} ({e.code().name}); start one with "
                                  "`sidrec serve --model_base_path RUN_DIR/ranker/<run>/export`") from None
        raise ValueError(f"{config.server} refused the request: {e.code().name}: {e.details()}") from None


def describe(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines.append(f"user {r['user']} (day {r['day']}): watching {r['watch']}, {len(r['history'])} history items; "
                     f"{len(r['candidates'])} candidates")
        for i, item in enumerate(r["ranked"], 1):
            lines.append(f"  {i:>3}. {item.item_id:<14} click {item.click_probability:.3f}  engagement "
                         f"{item.engagement:.3f}" + ("  (clicked)" if item.item_id in r["clicked"] else ""))
        if r["embedded"]:
            lines.append(f"  {len(r['embedded'])} item(s) missing from the SID table sent as content embeddings (the "
                         f"served RQ-VAE computes their SIDs): {', '.join(r['embedded'][:5])}"
                         + (" ..." if len(r["embedded"]) > 5 else ""))
        if r["missing"]:
            lines.append(f"  items without a SID or embedding (served the OOV row): {r['missing']}")
    return "\n".join(lines)
