"""`sidrec predict`: rank logged candidates of a few users of one day through a running gRPC server."""

import dataclasses

import grpc
import numpy as np

from pipeline.core.cards import read_representation
from pipeline.core.config_flags import flag
from pipeline.core.layout import RunLayout, SidTableLayout
from pipeline.core.representation import DEFAULT_SERVED, RepresentationConfig
from pipeline.data import corpus_io, log_io, sid_table_io
from pipeline.sid.serving_examples import ServingExampleBuilder
from serving.client import RankerClient


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    server: str = flag("127.0.0.1:8500", "host:port of the server")
    model_name: str = flag("ranker", "model name on the server")
    representation: str = flag(DEFAULT_SERVED, "the representation the served model was trained on "
                                               "(RUN_DIR/transform/<name>)")
    day: int = flag(0, "logged day to take users from (default: the last)")
    users: int = flag(3, "how many users")
    user: str = flag("", "one user id instead")
    candidates: tuple[str, ...] = flag((), "comma-separated item ids instead of the logged ones")


def builder_for_run(layout: RunLayout, config: RepresentationConfig) -> ServingExampleBuilder:
    """A request builder with what `config` joins, read from a run: its SID table, or the corpus for dense."""
    if config.has_sids:
        return ServingExampleBuilder(config, sids=sid_table_io.read_sid_table(SidTableLayout(layout.sids).table).lookup())
    if config.is_dense:
        corpus = corpus_io.read_corpus(layout.data.corpus)
        return ServingExampleBuilder(config, embeddings=dict(zip(corpus.item_ids, corpus.embeddings)))
    return ServingExampleBuilder(config)


def run(layout: RunLayout, config: PredictConfig) -> list[dict]:
    """One ranking per user: their last watch and history of the day, with the candidates they were shown."""
    representation = RepresentationConfig(**read_representation(layout.transform_output(config.representation))["config"])
    builder = builder_for_run(layout, representation)
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
            candidates = list(config.candidates) or list(dict.fromkeys(logs.candidate_item_id[rows]))
            ranked = _rank(client, config, builder, watch, candidates, history)
            results.append({"user": user, "day": day, "watch": watch, "history": history, "candidates": candidates,
                            "ranked": ranked, "clicked": set(logs.candidate_item_id[rows][logs.click[rows] == 1]),
                            "missing": {k: v for k, v in builder.last_missing.items() if v}})
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
        if r["missing"]:
            lines.append(f"  items without a SID or embedding (served the OOV row): {r['missing']}")
    return "\n".join(lines)
