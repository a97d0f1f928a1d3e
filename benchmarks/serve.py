"""Serving latency and throughput: SIDs against content embeddings, gRPC against in-process, one run.

One request ranks 100 candidates for one user (raw tf.Examples built as the client builds them). Three
forms of the same request: every item by its SID (from the SID table); every item by its content
embedding only (the instant cold-start path: the export's frozen RQ-VAE computes the SIDs), the
worst case of a request about items the SID table has not caught up with; and every tenth candidate
new (by embedding, the rest by SID), the common case. At concurrency 1 and 8:
p50 and p99 latency and requests/s through `sidrec serve` (a subprocess, called with the official
stub; SID requests also with --enable_batching, and over the REST API as b64 row instances on
kept-alive connections) and through the SavedModel's `serving_default` in this process. The ranker is exported twice from its checkpoint, with and without the RQ-VAE, for
the export's size and for what holding the RQ-VAE costs a SID request; the RQ-VAE's share of an
export at the paper's configuration (D=2048, L=8, K=2048) is counted from a built, untrained model.

  python benchmarks/serve.py --run_dir runs/demo --out benchmarks/results/serve.json
"""

import argparse
import base64
import glob
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from pipeline.core.tf_env import tf  # noqa: E402

from benchmarks.common import emit  # noqa: E402
from pipeline.core import features as fk  # noqa: E402
from pipeline.core import fingerprint  # noqa: E402
from pipeline.core.cards import read_export_card, read_serving_sample  # noqa: E402
from pipeline.core.layout import RankerLayout, RunLayout  # noqa: E402
from pipeline.core.representation import RepresentationConfig  # noqa: E402
from pipeline.data import corpus_io, log_io, sid_table_io  # noqa: E402
from pipeline.sid.serving_examples import ServingExampleBuilder  # noqa: E402
from pipeline.stages import day_loop  # noqa: E402
from serving import export  # noqa: E402
from serving.client import RankerClient  # noqa: E402


def _requests(layout: RunLayout, export_dir: str, candidates: int) -> dict[str, list[bytes]]:
    """The same ranking request with every item by SID, with every item by content embedding, and with
    every tenth candidate new (missing from the SID table: by embedding, the rest by SID)."""
    config = RepresentationConfig(**read_export_card(export_dir)["config"])
    logs = log_io.read_logs(layout.data, days=[layout.data.days()[-1]])
    items = list(dict.fromkeys(logs.candidate_item_id))[:candidates]
    row = (logs.watch_item_id[0], items, logs.history(0))
    sids = sid_table_io.read_sid_table(os.path.join(layout.sids, "table")).lookup()
    corpus = corpus_io.read_corpus(layout.data.corpus)
    embeddings = dict(zip(corpus.item_ids, corpus.embeddings))
    new = set(items[::10]) - {row[0]} - set(row[2])
    return {"sids": ServingExampleBuilder(config, sids=sids).rank_request(*row),
            "embeddings": ServingExampleBuilder(config, embeddings=embeddings).rank_request(*row),
            "tenth_of_candidates_new": ServingExampleBuilder(
                config, sids={i: s for i, s in sids.items() if i not in new},
                embeddings={i: embeddings[i] for i in new}).rank_request(*row)}


def _export_both_ways(run_dir: str, export_dir: str, layout: RunLayout, out_dir: str) -> dict[str, str]:
    """The run's ranker (from its checkpoint) exported with and without the RQ-VAE; {form: export dir}."""
    card = read_export_card(export_dir)
    transform_dir = layout.transform_output(card["name"])
    recorded = fingerprint.read(run_dir)["inputs"]["train_config"]
    config = day_loop.TrainConfig(**{name: tuple(value) if isinstance(value, list) else value
                                     for name, value in recorded.items()})
    model = day_loop.build_ranker(card, config)
    model(next(iter(day_loop.day_dataset(transform_dir, card["days"][0], 2))))
    tf.train.Checkpoint(model=model).restore(tf.train.latest_checkpoint(RankerLayout(run_dir).checkpoints)).expect_partial()
    warmup = read_serving_sample(transform_dir)
    return {"with_rqvae": export.export_version(model, transform_dir, os.path.join(out_dir, "with"), 1, warmup,
                                                tokenizer=export.sid_tokenizer_for(transform_dir)),
            "without_rqvae": export.export_version(model, transform_dir, os.path.join(out_dir, "without"), 1, warmup)}


def _paper_rqvae_bytes() -> dict:
    """Bytes of what an export holds of the RQ-VAE (encoder, codebooks, usage) at the paper's D, L and K."""
    from models.rqvae import RQVAE

    sizes = {}
    for name, encoder_dims in (("latent_32", (256, 32)), ("latent_256", (256,))):
        model = RQVAE(2048, encoder_dims, num_levels=8, codebook_size=2048)
        model.build((None, 2048))
        held = model.encoder.weights + model.quantizer.weights
        sizes[name] = int(sum(np.prod(w.shape) * w.dtype.size for w in held))
    return sizes


def _size_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _measure(call, requests: int, concurrency: int) -> dict:
    latencies = []

    def timed(_):
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)

    for _ in range(5):  # warm up
        call()
    start = time.perf_counter()
    with futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(timed, range(requests)))
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "requests_per_s": round(requests / elapsed, 1)}


class _RestClient:
    """TF Serving's REST Predict with the request as the row format's b64 instances; one kept-alive connection
    per thread, as an HTTP client library pools them."""

    def __init__(self, target: str, records: list[bytes]):
        self._host, self._port = target.rsplit(":", 1)
        self._body = json.dumps({"instances": [{"b64": base64.b64encode(r).decode()} for r in records]}).encode()
        self._local = threading.local()

    def predict(self) -> np.ndarray:
        if not hasattr(self._local, "connection"):
            self._local.connection = http.client.HTTPConnection(self._host, int(self._port), timeout=60)
        connection = self._local.connection
        connection.request("POST", "/v1/models/ranker:predict", self._body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        body = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"REST predict: {response.status} {body}")
        return np.array([p[fk.CLICK_PROBABILITY] for p in body["predictions"]], np.float32)

    @property
    def body_bytes(self) -> int:
        return len(self._body)


def _through_server(base: str, flags: list[str], calls: dict, requests: int, rest_forms=()) -> dict:
    """{form: {concurrency: measurement}} through `sidrec serve` on `base` over gRPC, and over REST for
    `rest_forms` ({"rest_" + form: ...}, with "rest_agrees_with_grpc" the largest score difference)."""
    server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--model_base_path", base, "--port", "0",
                               "--rest_api_port", "-1", *flags], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    try:
        rest_target = None
        for line in server.stdout:
            if line.startswith("REST API on "):
                rest_target = line.split()[3].rstrip(";")
            if line.startswith("listening on "):
                target = line.split()[-1]
                break
        client = RankerClient(target)
        out = {form: {c: _measure(lambda r=request: client.predict("ranker", r), requests, c) for c in (1, 8)}
               for form, request in calls.items()}
        for form in rest_forms:
            rest = _RestClient(rest_target, calls[form])
            grpc_scores = client.predict("ranker", calls[form])[0][fk.CLICK_PROBABILITY]
            out["rest_agrees_with_grpc"] = float(np.abs(rest.predict() - grpc_scores).max())
            out["rest_request_bytes"] = rest.body_bytes
            out["rest_" + form] = {c: _measure(rest.predict, requests, c) for c in (1, 8)}
        return out
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", default=os.path.join("runs", "demo"))
    parser.add_argument("--ranker_run", default="", help="default: the newest RUN_DIR/ranker/sid_spm_8192-*")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    layout = RunLayout(args.run_dir)
    runs = sorted(glob.glob(os.path.join(layout.ranker, "sid_spm_8192-*")), key=os.path.getmtime)
    run_dir = args.ranker_run or (runs[-1] if runs else "")
    found = export.versions(RankerLayout(run_dir).export) if run_dir else []
    if not found:
        raise SystemExit(f"no sid_spm_8192 run with exports under {layout.ranker}: run `make demo`, or give --ranker_run")
    export_dir = os.path.join(RankerLayout(run_dir).export, str(found[-1]))
    requests = _requests(layout, export_dir, args.candidates)
    scratch = tempfile.mkdtemp(prefix="sidrec-serve-bench-")
    exports = _export_both_ways(run_dir, export_dir, layout, scratch)
    signatures = {form: tf.saved_model.load(path).signatures[export.SERVING_DEFAULT] for form, path in exports.items()}
    calls = {form: lambda r=request: signatures["with_rqvae"](examples=tf.constant(r)) for form, request in requests.items()}
    calls["sids_export_without_rqvae"] = lambda: signatures["without_rqvae"](examples=tf.constant(requests["sids"]))
    scores = {form: call()[fk.CLICK_PROBABILITY].numpy() for form, call in calls.items()}

    measured = {"in_process": {form: {c: _measure(call, args.requests, c) for c in (1, 8)}
                               for form, call in calls.items()}}
    base = os.path.dirname(exports["with_rqvae"])
    measured["grpc"] = _through_server(base, [], requests, args.requests, rest_forms=("sids",))
    measured["grpc_batching"] = _through_server(base, ["--enable_batching"], {"sids": requests["sids"]}, args.requests)

    results = {"ranker_run": run_dir, "candidates_per_request": args.candidates, "requests": args.requests,
               "cpus": os.cpu_count(),
               "request_bytes": {form: sum(map(len, request)) for form, request in requests.items()},
               "max_score_difference_vs_sids": {form: float(np.abs(scores[form] - scores["sids"]).max())
                                                for form in requests if form != "sids"},
               "export_bytes": {form: _size_bytes(path) for form, path in exports.items()},
               "rest": {"request_bytes_sids": measured["grpc"]["rest_request_bytes"],
                        "max_score_difference_vs_grpc": measured["grpc"]["rest_agrees_with_grpc"]}}
    results["rqvae_bytes_at_paper_config"] = _paper_rqvae_bytes()  # D=2048, L=8, K=2048; built, not trained
    shutil.rmtree(scratch, ignore_errors=True)
    results["export_bytes"]["rqvae_share"] = round(
        1 - results["export_bytes"]["without_rqvae"] / results["export_bytes"]["with_rqvae"], 3)
    for c in (1, 8):
        local, remote, batched = (measured[s] for s in ("in_process", "grpc", "grpc_batching"))
        results[f"concurrency_{c}"] = {
            "in_process": {form: local[form][c] for form in local},
            "grpc": {form: remote[form][c] for form in requests},
            "grpc_batching": {"sids": batched["sids"][c]},
            "rest": {"sids": remote["rest_sids"][c]},
            "rest_to_grpc_throughput": round(remote["rest_sids"][c]["requests_per_s"] / remote["sids"][c]["requests_per_s"], 3),
            "rest_to_grpc_p50_latency": round(remote["rest_sids"][c]["p50_ms"] / remote["sids"][c]["p50_ms"], 2),
            "embeddings_to_sids_p50_latency_grpc": round(remote["embeddings"][c]["p50_ms"] / remote["sids"][c]["p50_ms"], 2),
            "embeddings_to_sids_throughput_grpc": round(
                remote["embeddings"][c]["requests_per_s"] / remote["sids"][c]["requests_per_s"], 3),
            "embeddings_to_sids_throughput_in_process": round(
                local["embeddings"][c]["requests_per_s"] / local["sids"][c]["requests_per_s"], 3),
            "tenth_new_to_sids_throughput_grpc": round(
                remote["tenth_of_candidates_new"][c]["requests_per_s"] / remote["sids"][c]["requests_per_s"], 3),
            "rqvae_in_export_sid_throughput_in_process": round(
                local["sids"][c]["requests_per_s"] / local["sids_export_without_rqvae"][c]["requests_per_s"], 3),
            "grpc_to_in_process_throughput": round(remote["sids"][c]["requests_per_s"] / local["sids"][c]["requests_per_s"], 3),
            "batching_to_grpc_throughput": round(batched["sids"][c]["requests_per_s"] / remote["sids"][c]["requests_per_s"], 3)}
    return emit(results, args.out)


if __name__ == "__main__":
    main()
