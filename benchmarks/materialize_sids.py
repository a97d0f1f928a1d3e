"""SID materialisation throughput through the Beam pipeline against the matmul bound.

In one process: the float32 matmul rate (GFLOP/s), then the whole Beam job (read Parquet,
validate, dedupe, RunInference, write Parquet + TFRecord + dead letters, statistics) over corpora
of two sizes. Items/s is reported end to end and at the margin (the extra items of the larger run
over the extra seconds, which removes the fixed start-up: worker processes, model loads). The
bound is GFLOP/s over the FLOPs one item needs in the exported model.

  python benchmarks/materialize_sids.py --preset paper --num_items 40000
  python benchmarks/materialize_sids.py --preset demo --num_items 100000
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.common import emit, matmul_gflops  # noqa: E402
from benchmarks.rqvae import PRESETS, forward_flops  # noqa: E402
from beam_jobs import materialize_sids  # noqa: E402
from models import rqvae_savedmodel  # noqa: E402
from models.rqvae import RQVAE  # noqa: E402
from pipeline.data import corpus_io  # noqa: E402
from pipeline.core.records import Corpus  # noqa: E402


def _corpus(path: str, n: int, dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((n, dim)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    corpus_io.write_corpus(path, Corpus(item_ids=np.array([f"item{i:09d}" for i in range(n)], dtype=object),
                                      embeddings=embeddings, first_day=np.zeros(n, np.int64)))


def _timed_run(corpus: str, model: str, output: str, beam_args: list[str]) -> float:
    start = time.perf_counter()
    summary = materialize_sids.main(["--corpus", corpus, "--model", model, "--output", output, *beam_args])
    seconds = time.perf_counter() - start
    assert summary["counters"]["rows_materialised"] > 0
    return seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    parser.add_argument("--num_items", type=int, default=40_000, help="the larger corpus; the smaller is half")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args, beam_args = parser.parse_known_args(argv)

    dim, config = PRESETS[args.preset]
    flops = sum(forward_flops(dim, config).values())
    gflops = matmul_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        model = RQVAE.from_config_dataclass(dim, config)  # weights do not change the work per item
        export = rqvae_savedmodel.export(model, os.path.join(tmp, "export"))
        sizes = (args.num_items // 2, args.num_items)
        seconds = []
        for n in sizes:
            corpus = os.path.join(tmp, f"corpus{n}.parquet")
            _corpus(corpus, n, dim)
            seconds.append(_timed_run(corpus, export, os.path.join(tmp, f"sids{n}"), beam_args))
    bound = gflops * 1e9 / flops
    end_to_end = sizes[1] / seconds[1]
    marginal = (sizes[1] - sizes[0]) / (seconds[1] - seconds[0])
    results = {"preset": args.preset, "input_dim": dim, "encoder_dims": list(config.encoder_dims),
               "num_levels": config.num_levels, "codebook_size": config.codebook_size,
               "beam_args": beam_args or ["(default: DirectRunner, multi_processing, one worker per core)"],
               "matmul_gflops": round(gflops, 1), "flops_per_item": flops,
               "bound_items_per_s": round(bound), "items": list(sizes), "seconds": [round(s, 2) for s in seconds],
               "end_to_end_items_per_s": round(end_to_end), "marginal_items_per_s": round(marginal),
               "end_to_end_ratio_to_bound": round(end_to_end / bound, 3),
               "marginal_ratio_to_bound": round(marginal / bound, 3)}
    return emit(results, args.out)


if __name__ == "__main__":
    main()
