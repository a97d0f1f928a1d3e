"""TF Transform throughput per item representation: the Beam job against its own graph, in one run.

A simulated world (3 days by default) with SIDs from a briefly trained RQ-VAE; for each
representation:
  - the job's rate: the whole transform job (read, row rules, join, count/SPM step, analyse,
    transform, encode, write) on every day, in examples/s;
  - the graph's rate: the same transform graph (the job's transform_fn) in process on the second
    world's joined rows (as many rows as the margin below), in a tight tf.data loop over batches of the
    job's size: parse, transform, convert and serialize exactly as the job does (the serialized examples
    must equal the job's, and are checked to);
  - the job's rate at the margin: a second world with --margin_factor times the impressions a day
    (the same corpus and SIDs) is transformed too, and the extra rows over the extra seconds remove
    the job's fixed costs (two pipeline start-ups, DoFn set-up, graph tracing, the SPM training);
  - their ratios (target >= 0.5), and SPM's rate against random hashing's, in the job and in the
    graph (target >= 0.8).
Every time is the median of --repeats runs (min and max recorded); the ratios are of medians.
Also the SPM tokenisation rate of the transform graph's op (tensorflow_text) against
`sentencepiece`'s own batch encode on the same SID strings.

  python benchmarks/transform.py --impressions_per_day 50000 --out benchmarks/results/transform.json
"""

import argparse
import dataclasses
import os
import shutil
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


def graph_rate(layout: RunLayout, output: str, days: list[int], repeats: int,
               batch_size: int = transform.BATCH_ROWS, sids_dir: str = "") -> dict:
    """Examples/s of the job's transform graph on `days`' joined rows, in process, in batches of the job's
    size (median, min and max of `repeats` passes after a warm one); and whether its serialized outputs
    equal the job's for those days."""
    import glob

    import pyarrow as pa
    import tensorflow_transform as tft
    from tfx_bsl.coders import example_coder
    from tfx_bsl.tfxio import tensor_to_arrow

    from beam_jobs.item_features_join import ItemTablesFromFiles, join_batch
    from pipeline.core import row_rules
    from pipeline.core.cards import read_json
    from pipeline.core.examples import to_examples
    from pipeline.data import log_io
    from pipeline.sid.preprocessing import raw_feature_spec

    config = RepresentationConfig(**read_json(os.path.join(output, "representation.json"), "card", "")["config"])
    index = ItemTablesFromFiles(sids_dir or layout.sids, layout.data.corpus, config)()
    decoder = example_coder.ExamplesToRecordBatchDecoder()
    raw = []  # the days' rows as the graph reads them: checked, joined, serialized (not timed)
    for day in days:
        for path in sorted(glob.glob(layout.data.day_pattern(day))):
            for records in log_io.read_tfrecord_batches(path, batch_size):
                batch = decoder.DecodeBatch(records)
                checked = row_rules.check_log_batch(batch, path, day, config.max_history)
                raw += to_examples(join_batch(config, batch.filter(pa.array(checked.ok)), index))
    layer = tft.TFTransformOutput(output).transform_features_layer()
    spec = raw_feature_spec(config)

    def as_columns(value):  # what the job's record batches hold: a dense [B] feature as one value per row
        return tf.expand_dims(value, -1) if isinstance(value, tf.Tensor) and value.shape.rank == 1 else value

    step = tf.function(lambda s: {k: as_columns(v) for k, v in layer(tf.io.parse_example(s, spec)).items()})
    # Batches made before the clock starts, as Beam hands the job its batches: a tf.data iterator over them
    # stalled at its end of sequence for a fixed ~4.3 s in some passes, measured after the jobs ran in process.
    dataset = [tf.constant(raw[i:i + batch_size]) for i in range(0, len(raw), batch_size)]

    def any_batch(type_spec):
        if isinstance(type_spec, tf.SparseTensorSpec):
            return tf.SparseTensorSpec([None] * type_spec.shape.rank, type_spec.dtype)
        if isinstance(type_spec, tf.RaggedTensorSpec):
            return tf.RaggedTensorSpec([None, *type_spec.shape[1:]], type_spec.dtype, type_spec.ragged_rank,
                                       type_spec.row_splits_dtype)
        return tf.TensorSpec([None, *type_spec.shape[1:]], type_spec.dtype)

    first = step(dataset[0])
    converter = tensor_to_arrow.TensorsToRecordBatchConverter(
        {k: any_batch(tf.type_spec_from_value(v)) for k, v in first.items()})

    def run() -> list[bytes]:
        produced = []
        for batch in dataset:
            produced += to_examples(converter.convert(step(batch)))
        return produced

    produced = run()  # warm: traced, caches filled
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    job = []
    for day in days:
        for path in sorted(glob.glob(os.path.join(output, "transformed", f"day={day:04d}", "*"))):
            for records in log_io.read_tfrecord_batches(path, 10_000):
                job += records
    return {"examples": len(raw), "seconds": spread(seconds),
            "examples_per_s": round(len(raw) / float(np.median(seconds))),
            "outputs_equal_the_job": sorted(produced) == sorted(job)}


def spread(values: list[float]) -> dict:
    """Median, min and max of repeated timings (seconds)."""
    return {"median": round(float(np.median(values)), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def _timed_job(layout: RunLayout, sids: str, output: str, kind: str, flags: dict, beam_args: list[str]) -> float:
    """Seconds of the whole transform job of one representation."""
    argv = ["--data_dir", layout.data.root, "--sids", sids, "--output", output, "--kind", kind, *beam_args]
    for key, value in flags.items():
        argv += [f"--{key}", str(value)]
    start = time.perf_counter()
    transform.main(argv)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impressions_per_day", type=int, default=50_000)
    parser.add_argument("--num_days", type=int, default=3)
    parser.add_argument("--margin_factor", type=int, default=3,
                        help="the second world's impressions a day, as a multiple of the first's")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every job and graph pass (median taken)")
    parser.add_argument("--out", default="")
    args, beam_args = parser.parse_known_args(argv)
    if args.margin_factor < 2:
        parser.error(f"--margin_factor must be >= 2 (the second world needs more rows), got {args.margin_factor}")
    with tempfile.TemporaryDirectory() as tmp:
        layout, larger = RunLayout(os.path.join(tmp, "world")), RunLayout(os.path.join(tmp, "larger"))
        for world, per_day in ((layout, args.impressions_per_day), (larger, args.margin_factor * args.impressions_per_day)):
            simulate_run(SimulatorConfig(num_days=args.num_days, impressions_per_day=per_day), world)
        corpus = corpus_io.read_corpus(layout.data.corpus)
        other = corpus_io.read_corpus(larger.data.corpus)
        assert np.array_equal(corpus.embeddings, other.embeddings), "the two worlds must share one SID table"
        rq_config = dataclasses.replace(RQVAEConfig(), max_epochs=5)
        model, _ = rqvae_job.train(corpus.embeddings, rq_config, lambda *_: None)
        export = rqvae_savedmodel.export(model, os.path.join(layout.rqvae, "export"))
        materialize_sids.main(["--corpus", layout.data.corpus, "--model", export, "--output", layout.sids])
        rows = args.num_days * args.impressions_per_day
        extra_rows = (args.margin_factor - 1) * rows
        results = {"examples": rows, "days": args.num_days, "margin_examples": rows + extra_rows,
                   "repeats": args.repeats, "graph_batch_rows": transform.BATCH_ROWS,
                   "beam_args": beam_args or ["(default: the local FnApiRunner, beam_jobs/local_runner.py)"]}
        for kind, flags in REPRESENTATIONS.items():
            small, large = [], []
            for repeat in range(args.repeats):  # interleaved, so a slow spell of the machine hits both worlds
                small.append(_timed_job(layout, layout.sids, os.path.join(tmp, f"{kind}_{repeat}"), kind, flags,
                                        beam_args))
                large.append(_timed_job(larger, layout.sids, os.path.join(tmp, f"{kind}_larger_{repeat}"), kind,
                                        flags, beam_args))
            graph = graph_rate(larger, os.path.join(tmp, f"{kind}_larger_0"), list(range(1, args.num_days + 1)),
                               args.repeats, sids_dir=layout.sids)
            seconds, more_seconds = float(np.median(small)), float(np.median(large))
            job, margin = rows / seconds, extra_rows / max(more_seconds - seconds, 1e-9)
            results[kind] = {"job_seconds": spread(small), "larger_job_seconds": spread(large),
                             "graph_seconds": graph["seconds"], "graph_examples": graph["examples"],
                             "job_examples_per_s": round(job), "job_marginal_examples_per_s": round(margin),
                             "larger_job_examples_per_s": round((rows + extra_rows) / more_seconds),
                             "graph_examples_per_s": graph["examples_per_s"],
                             "job_to_graph": round(job / graph["examples_per_s"], 3),
                             "larger_job_to_graph": round((rows + extra_rows) / more_seconds
                                                          / graph["examples_per_s"], 3),
                             "job_marginal_to_graph": round(margin / graph["examples_per_s"], 3),
                             "fixed_seconds": round(seconds - rows / margin, 1),
                             "graph_outputs_equal_the_job": graph["outputs_equal_the_job"]}
            for repeat in range(args.repeats):  # outputs are large at scale: only one kind's at a time
                shutil.rmtree(os.path.join(tmp, f"{kind}_{repeat}"))
                shutil.rmtree(os.path.join(tmp, f"{kind}_larger_{repeat}"))
        for where in ("job", "job_marginal", "larger_job", "graph"):
            results[f"sid_spm_to_random_hash_{where}"] = round(
                results["sid_spm"][f"{where}_examples_per_s"] / results["random_hash"][f"{where}_examples_per_s"], 3)
        sids = rqvae_job.encode(model, corpus.embeddings)
        results["spm_tokenisation"] = spm_rates(np.tile(sids, (5, 1)), rq_config.codebook_size, 8192)
    return emit(results, args.out)


if __name__ == "__main__":
    main()
