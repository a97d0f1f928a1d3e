"""TF Transform throughput per item representation, and in-graph SentencePiece against the library.

In one run: a simulated world (3 days by default) with SIDs from a briefly trained RQ-VAE, then
the whole transform job (join, SPM step, analyse, transform, write) for each representation, as
examples/s; and the SPM tokenisation rate of the transform graph's op (tensorflow_text) against
`sentencepiece`'s own batch encode on the same SID strings, as a ratio.

  python benchmarks/transform.py --impressions_per_day 50000 --out benchmarks/results/transform.json
"""

import argparse
import dataclasses
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import sentencepiece as spm  # noqa: E402
from pipeline.core.tf_env import tf  # noqa: E402

from beam_jobs import materialize_sids, transform  # noqa: E402
from benchmarks.common import emit  # noqa: E402
from models import rqvae_savedmodel  # noqa: E402
from models.rqvae import RQVAEConfig  # noqa: E402
from pipeline.data import corpus_io
from pipeline.stages import train_rqvae as rqvae_job
from pipeline.sid import sid_text
from pipeline.sid import spm_vocab  # noqa: E402
from pipeline.core.layout import RunLayout  # noqa: E402
from pipeline.sid.preprocessing import spm_pieces  # noqa: E402
from pipeline.core.representation import RepresentationConfig  # noqa: E402
from pipeline.stages.simulate import run as simulate_run  # noqa: E402
from pipeline.data.simulator import SimulatorConfig  # noqa: E402

REPRESENTATIONS = {"random_hash": {"buckets": 8192}, "dense": {}, "sid_ngram": {"ngram": 2},
                   "sid_spm": {"vocab_size": 8192}}


def spm_rates(sids: np.ndarray, codebook_size: int, vocab_size: int, batch: int = 8192) -> dict:
    """Items/s of the in-graph tokenizer and of the sentencepiece library on the same SIDs."""
    uniq, counts = np.unique(sids, axis=0, return_counts=True)
    model = spm_vocab.train_sid_spm(uniq, counts, codebook_size, vocab_size)
    config = RepresentationConfig(kind="sid_spm", vocab_size=vocab_size, num_levels=sids.shape[1],
                                  codebook_size=codebook_size)
    tokenize = tf.function(lambda x: spm_pieces(x, config, model).flat_values)
    chunks = [tf.constant(sids[i:i + batch]) for i in range(0, len(sids), batch)]
    tokenize(chunks[0])  # trace
    start = time.perf_counter()
    for chunk in chunks:
        tokenize(chunk).numpy()
    in_graph = len(sids) / (time.perf_counter() - start)
    processor = spm.SentencePieceProcessor(model_proto=model)
    texts = sid_text.sid_text(sids, codebook_size)
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        processor.encode(texts[i:i + batch])
    library = len(sids) / (time.perf_counter() - start)
    return {"in_graph_items_per_s": round(in_graph), "library_items_per_s": round(library),
            "in_graph_to_library": round(in_graph / library, 3)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impressions_per_day", type=int, default=50_000)
    parser.add_argument("--num_days", type=int, default=3)
    parser.add_argument("--out", default="")
    args, beam_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        layout = RunLayout(tmp)
        simulate_run(SimulatorConfig(num_days=args.num_days, impressions_per_day=args.impressions_per_day),
                     layout.data)
        corpus = corpus_io.read_corpus(layout.data.corpus)
        rq_config = dataclasses.replace(RQVAEConfig(), max_epochs=5)
        model, _ = rqvae_job.train(corpus.embeddings, rq_config, lambda *_: None)
        export = rqvae_savedmodel.export(model, os.path.join(layout.rqvae, "export"))
        materialize_sids.main(["--corpus", layout.data.corpus, "--model", export, "--output", layout.sids])
        rows = args.num_days * args.impressions_per_day
        results = {"examples": rows, "days": args.num_days, "beam_args": beam_args or ["(default DirectRunner)"]}
        for kind, flags in REPRESENTATIONS.items():
            argv = ["--data_dir", layout.data.root, "--sids", layout.sids, "--output", os.path.join(tmp, kind),
                    "--kind", kind, *beam_args]
            for key, value in flags.items():
                argv += [f"--{key}", str(value)]
            start = time.perf_counter()
            transform.main(argv)
            results[f"{kind}_examples_per_s"] = round(rows / (time.perf_counter() - start))
        sids = rqvae_job.encode(model, corpus.embeddings)
        results["spm_tokenisation"] = spm_rates(np.tile(sids, (5, 1)), rq_config.codebook_size, 8192)
    return emit(results, args.out)


if __name__ == "__main__":
    main()
