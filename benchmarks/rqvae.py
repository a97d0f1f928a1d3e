"""RQ-VAE throughput against the matmul bound, and SID quality at a given configuration.

Measured in one process: the float32 matmul rate of this machine (GFLOP/s), the RQ-VAE's training
throughput (items/s through `model.fit`) and the exported SavedModel's inference throughput. Each
throughput is reported as a ratio to its bound: GFLOP/s divided by the FLOPs one item needs.

  python benchmarks/rqvae.py --preset demo
  python benchmarks/rqvae.py --preset paper --num_items 100000 --max_epochs 30 --out results.json
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from pipeline.core.tf_env import tf  # noqa: E402

from benchmarks.common import emit, matmul_gflops  # noqa: E402
from models import rqvae_savedmodel  # noqa: E402
from models.rqvae import RQVAE, RQVAEConfig  # noqa: E402
from pipeline.stages import train_rqvae as rqvae_job
from pipeline.sid import sid_quality  # noqa: E402
from pipeline.data.simulator import SimulatorConfig, simulate  # noqa: E402

PRESETS = {
    # The demo: D=256, hidden 256 -> 32-d latent, L=4, K=256.
    "demo": (256, RQVAEConfig()),
    # The paper (appendix A.1): D=2048, one encoder layer of 256, L=8, K=2048.
    "paper": (2048, RQVAEConfig(encoder_dims=(256,), num_levels=8, codebook_size=2048)),
}


def forward_flops(input_dim: int, config: RQVAEConfig) -> dict:
    """Multiply-adds x 2 per item: encoder, quantizer distances (L x K x latent), decoder."""
    widths = [input_dim, *config.encoder_dims]
    encoder = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
    decoder = sum(2 * a * b for a, b in zip(widths[::-1][:-1], widths[::-1][1:]))
    quantizer = config.num_levels * 2 * config.latent_dim * config.codebook_size
    return {"encoder": encoder, "quantizer": quantizer, "decoder": decoder}


def training_throughput(embeddings: np.ndarray, config: RQVAEConfig, epochs: int) -> float:
    """Items/s of model.fit after a warm-up epoch (tracing excluded)."""
    model = RQVAE.from_config_dataclass(embeddings.shape[1], config)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
    data = tf.data.Dataset.from_tensor_slices(embeddings).batch(config.batch_size, drop_remainder=True).cache()
    model.fit(data, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(data, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    return epochs * (len(embeddings) // config.batch_size) * config.batch_size / seconds


def inference_throughput(model: RQVAE, embeddings: np.ndarray, batch_size: int = 8192) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        loaded = rqvae_savedmodel.LoadedRQVAE(rqvae_savedmodel.export(model, tmp))
        loaded(embeddings[:batch_size], batch_size)  # warm-up
        start = time.perf_counter()
        loaded(embeddings, batch_size)
        return len(embeddings) / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--num_items", type=int, default=20_000)
    parser.add_argument("--encoder_dims", default="", help="override the preset's, e.g. 256,32")
    parser.add_argument("--throughput_epochs", type=int, default=2)
    parser.add_argument("--max_epochs", type=int, default=0,
                        help="if > 0, also train to convergence (capped) and report SID quality")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args = parser.parse_args(argv)

    dim, config = PRESETS[args.preset]
    if args.encoder_dims:
        config = dataclasses.replace(config, encoder_dims=tuple(int(v) for v in args.encoder_dims.split(",")))
    data = simulate(SimulatorConfig(num_items=args.num_items, num_users=100, num_days=1,
                                    impressions_per_day=100, embedding_dim=dim))
    embeddings = data.embeddings
    gflops = matmul_gflops()
    flops = forward_flops(dim, config)
    forward = sum(flops.values())
    # Backward costs about twice the forward for the dense layers; the argmin has no gradient.
    train_flops = 3 * (flops["encoder"] + flops["decoder"]) + flops["quantizer"]
    results = {"preset": args.preset, "input_dim": dim, "config": dataclasses.asdict(config),
               "items": args.num_items, "matmul_gflops": round(gflops, 1),
               "forward_flops_per_item": forward, "train_flops_per_item": train_flops}
    train_rate = training_throughput(embeddings, config, args.throughput_epochs)
    results["train_items_per_s"] = round(train_rate)
    results["train_bound_items_per_s"] = round(gflops * 1e9 / train_flops)
    results["train_ratio_to_bound"] = round(train_rate * train_flops / (gflops * 1e9), 3)

    model = RQVAE.from_config_dataclass(dim, config)
    if args.max_epochs:
        model, history = rqvae_job.train(embeddings, dataclasses.replace(config, max_epochs=args.max_epochs))
        sids = rqvae_job.encode(model, embeddings)
        report = sid_quality.report(sids, embeddings, data.item_ids, config.codebook_size,
                                    reconstructions=rqvae_job.reconstruct(model, embeddings))
        print(sid_quality.format_report(report))
        results["quality"] = {"epochs": len(history), "utilisation": [lv["utilisation"] for lv in report["levels"]],
                              "unique_sid_ratio": report["unique_sid_ratio"],
                              "prefix_cosine": [r["mean_cosine"] for r in report["prefix_similarity"]],
                              "reconstruction_r2": report["reconstruction"]["r2"]}
    infer_rate = inference_throughput(model, embeddings)
    results["inference_items_per_s"] = round(infer_rate)
    results["inference_bound_items_per_s"] = round(gflops * 1e9 / forward)
    results["inference_ratio_to_bound"] = round(infer_rate * forward / (gflops * 1e9), 3)
    return emit(results, args.out)


if __name__ == "__main__":
    main()
