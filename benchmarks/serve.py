"""Serving latency and throughput: the gRPC server against the in-process SavedModel, same requests.

One request ranks 100 candidates for one user (raw tf.Examples built from the SID table, as the
client does). At concurrency 1 and 8: p50 and p99 latency and requests/s through `sidrec serve`
(a subprocess, called with the official stub), without and with --enable_batching, and through
the SavedModel's `serving_default` called in this process; the ratios say what the server's gRPC
and protobuf work costs and what batching concurrent requests gains.

  python benchmarks/serve.py --run_dir runs/demo --out benchmarks/results/serve.json
"""

import argparse
import os
import subprocess
import sys
import time
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from pipeline.core.tf_env import tf  # noqa: E402

from benchmarks.common import emit  # noqa: E402
from pipeline.data import log_io  # noqa: E402
from pipeline.core.layout import RunLayout  # noqa: E402
from pipeline.core.cards import read_export_card  # noqa: E402
from pipeline.stages.predict import builder_for_run  # noqa: E402
from serving import export  # noqa: E402
from serving.client import RankerClient  # noqa: E402


def _request(layout: RunLayout, export_dir: str, candidates: int) -> list[bytes]:
    logs = log_io.read_logs(layout.data, days=[layout.data.days()[-1]])
    items = list(dict.fromkeys(logs.candidate_item_id))[:candidates]
    return builder_for_run(layout, read_export_card(export_dir)).rank_request(logs.watch_item_id[0], items,
                                                                              logs.history(0))


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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", default=os.path.join("runs", "demo"))
    parser.add_argument("--export_base", default="", help="default: the newest RUN_DIR/ranker/sid_spm_8192-*/export")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    layout = RunLayout(args.run_dir)
    import glob

    runs = sorted(glob.glob(os.path.join(layout.ranker, "sid_spm_8192-*", "export")), key=os.path.getmtime)
    if not (args.export_base or runs):
        raise SystemExit(f"no sid_spm_8192 run with exports under {layout.ranker}: run `make demo`, or give --export_base")
    base = args.export_base or runs[-1]
    found = export.versions(base)
    if not found:
        raise SystemExit(f"{base}: no export; run `make demo` first")
    export_dir = os.path.join(base, str(found[-1]))
    request = _request(layout, export_dir, args.candidates)
    serve = tf.saved_model.load(export_dir).signatures[export.SERVING_DEFAULT]
    in_process = lambda: serve(examples=tf.constant(request))  # noqa: E731

    results = {"export": export_dir, "candidates_per_request": args.candidates, "requests": args.requests,
               "cpus": os.cpu_count()}
    measured = {}
    for setting, flags in (("in_process", None), ("grpc", []), ("grpc_batching", ["--enable_batching"])):
        if flags is None:
            measured[setting] = {c: _measure(in_process, args.requests, c) for c in (1, 8)}
            continue
        server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--model_base_path", base,
                                   "--port", "0", *flags], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            target = next(line.split()[-1] for line in server.stdout if line.startswith("listening on "))
            client = RankerClient(target)
            measured[setting] = {c: _measure(lambda: client.predict("ranker", request), args.requests, c)
                                 for c in (1, 8)}
        finally:
            server.terminate()
            server.wait(timeout=30)
    for c in (1, 8):
        local, remote, batched = (measured[s][c] for s in ("in_process", "grpc", "grpc_batching"))
        results[f"concurrency_{c}"] = {
            "grpc": remote, "grpc_batching": batched, "in_process": local,
            "grpc_to_in_process_p50_latency": round(remote["p50_ms"] / local["p50_ms"], 2),
            "grpc_to_in_process_throughput": round(remote["requests_per_s"] / local["requests_per_s"], 3),
            "batching_to_grpc_throughput": round(batched["requests_per_s"] / remote["requests_per_s"], 3)}
    return emit(results, args.out)


if __name__ == "__main__":
    main()
