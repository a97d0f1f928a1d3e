"""Beam job: join SIDs onto the logs, learn the SPM vocabulary, and run TF Transform day by day.

Two pipelines in one run, because SentencepieceTokenizer takes its model as a graph attribute
(bytes when the graph is built), so the model cannot be the tensor output of a TFT analyzer:
  1. count each candidate's impressions over the training days and, for sid_spm, train the BPE
     SentencePiece model on the impressed SIDs weighted by them (OUTPUT/spm/sid_spm.model).
  2. TF Transform: analyse the training days, transform every day into
     OUTPUT/transformed/day=NNNN/part-*.tfrecord, and write OUTPUT/transform_fn and the schema.
Items without a SID get codes of -1 (the table's OOV row) and are counted. OUTPUT/lookups.json
holds the embedding lookups per item by popularity bucket (the paper's Figure 4).

  python -m beam_jobs.transform --data_dir runs/demo/data --sids runs/demo/sids \\
      --output runs/demo/transform --kind sid_spm --vocab_size 8192
"""

import argparse
import json
import logging
import os

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from tfx_bsl.coders import example_coder

from beam_jobs import publish
from beam_jobs.counters import job_counters
from beam_jobs.sid_stats import MergeCountsFn, bucketed_counts
from pipeline import contracts, data_io
from pipeline import features as fk
from pipeline import lookup_stats, spm_vocab
from pipeline.item_join import join_item_features
from pipeline.layout import LOG_FILE_PATTERN, TRANSFORMED_SUFFIX, DataLayout, transformed_day_prefix
from pipeline.preprocessing import make_preprocessing_fn, raw_feature_spec, serving_feature_spec
from pipeline.representation import KINDS, RepresentationConfig
from pipeline.serving_examples import REPRESENTATION_CARD, SERVING_SAMPLE

NAMESPACE = "sidrec_transform"
BATCH_ROWS = 4096
COUNT_BUCKETS = 64
SPM_MODEL = os.path.join("spm", "sid_spm.model")
LOOKUPS_FILE = "lookups.json"
SERVING_SAMPLE_ROWS = 64
# Counter names of items without a SID, per role (the names the job has always reported).
_MISSING_COUNTERS = {fk.WATCH_SID: "watch_without_sid", fk.CANDIDATE_SID: "candidate_without_sid",
                     fk.HISTORY_SIDS: "history_without_sid"}


class JoinItemFeatures(beam.DoFn):
    """Serialized log records -> one Arrow RecordBatch with SIDs, first day (and embeddings) joined.

    Items without a SID get codes of -1 (the OOV row) and are counted per role. Works on batches,
    so decoding (tfx_bsl, C++) and the joins are vectorised rather than per row.
    """

    def __init__(self, config: RepresentationConfig):
        self._config = config

    def setup(self):
        from tfx_bsl.coders import example_coder

        self._decoder = example_coder.ExamplesToRecordBatchDecoder()

    def process(self, serialized, sids, first_days, embeddings):
        config = self._config
        batch = self._decoder.DecodeBatch(serialized)
        n = batch.num_rows
        watch, candidate = (_ids(batch, key) for key in (fk.WATCH_ITEM_ID, fk.CANDIDATE_ITEM_ID))
        history_values, history_lengths, _ = contracts.list_column(batch.column(fk.HISTORY_ITEM_IDS))
        history = [v.decode("utf-8") for v in history_values]
        binary = pa.large_binary()
        columns = {
            fk.WATCH_ITEM_ID: data_io.scalar_list_array(np.array(watch, dtype=object).astype(bytes), binary),
            fk.CANDIDATE_ITEM_ID: data_io.scalar_list_array(np.array(candidate, dtype=object).astype(bytes), binary),
            fk.HISTORY_ITEM_IDS: data_io.list_array(np.array(history, dtype=object).astype(bytes),
                                                   history_lengths, binary),
            fk.CLICK: data_io.scalar_list_array(_scalars(batch, fk.CLICK), pa.int64()),
            fk.ENGAGEMENT: data_io.scalar_list_array(_scalars(batch, fk.ENGAGEMENT), pa.float32()),
            fk.DAY: data_io.scalar_list_array(_scalars(batch, fk.DAY), pa.int64()),
            fk.CANDIDATE_FIRST_DAY: data_io.scalar_list_array(
                np.array([first_days.get(i, -1) for i in candidate], np.int64), pa.int64()),
        }
        joined = join_item_features(config, sids, embeddings, watch, candidate, history, history_lengths)
        types = {fk.WATCH_EMBEDDING: pa.float32(), fk.CANDIDATE_EMBEDDING: pa.float32()}
        for key, (values, lengths) in joined.columns.items():
            columns[key] = data_io.list_array(values, lengths, types.get(key, pa.int64()))
            Metrics.counter(NAMESPACE, _MISSING_COUNTERS.get(key, f"{key}_missing")).inc(joined.missing[key])
        Metrics.counter(NAMESPACE, "rows_joined").inc(n)
        yield pa.RecordBatch.from_arrays(list(columns.values()), list(columns.keys()))


def _serving_sample(batches: list[pa.RecordBatch], config: RepresentationConfig) -> list[bytes]:
    """Up to SERVING_SAMPLE_ROWS rows as serving requests: the labels and evaluation keys dropped."""
    keys = list(serving_feature_spec(raw_feature_spec(config)))
    sample = batches[0].select(keys).slice(0, SERVING_SAMPLE_ROWS)
    return example_coder.RecordBatchToExamples(sample)


def _ids(batch: pa.RecordBatch, key: str) -> list[str]:
    return [v.decode("utf-8") for v in _scalars(batch, key)]


def _scalars(batch: pa.RecordBatch, key: str) -> np.ndarray:
    """One value per row, or a clear error: this job reads logs that passed the contract readers."""
    if key not in batch.schema.names:
        raise ValueError(f"log records without '{key}': check the logs with `sidrec validate` first")
    values, lengths, _ = contracts.list_column(batch.column(key))
    if (lengths != 1).any():
        raise ValueError(f"{int((lengths != 1).sum())} log records without exactly one '{key}' value: "
                         "check the logs with `sidrec validate` first")
    return values


def _candidate_counts(serialized) -> list:
    """Impressions per candidate in one batch, pre-aggregated per hash bucket."""
    from tfx_bsl.coders import example_coder

    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(serialized)
    return list(bucketed_counts(_ids(batch, fk.CANDIDATE_ITEM_ID), COUNT_BUCKETS))


def tensor_adapter_config(config: RepresentationConfig):
    """How TF Transform reads the joined record batches (TFXIO): arrow schema + tensor representations."""
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

    schema = schema_utils.schema_from_feature_spec(raw_feature_spec(config))
    types = {tf.string: pa.large_binary(), tf.int64: pa.int64(), tf.float32: pa.float32()}
    arrow_schema = pa.schema([(name, pa.large_list(types[spec.dtype]))
                              for name, spec in raw_feature_spec(config).items()])
    return tensor_adapter.TensorAdapterConfig(
        arrow_schema, tensor_representation_util.InferTensorRepresentationsFromSchema(schema))


def _day_files(layout: DataLayout, day: int) -> str:
    return os.path.join(layout.day_dir(day), LOG_FILE_PATTERN)


def count_step(layout: DataLayout, sid_table: data_io.SidTable, train_days, config, options, staging: str):
    """Pipeline 1: impressions per candidate over the training days, and (sid_spm) the BPE model.

    Returns:
      ({item_id: impressions}, SentencePiece model bytes or None).
    """
    counts_path = os.path.join(staging, "item_impressions.json")
    model_path = os.path.join(staging, SPM_MODEL)
    with beam.Pipeline(options=options) as p:
        counts = (
            [p | f"ReadDay{d}" >> beam.io.ReadFromTFRecord(_day_files(layout, d)) for d in train_days]
            | "AllTrainingDays" >> beam.Flatten()
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=BATCH_ROWS)
            | "CandidatesPerBucket" >> beam.FlatMap(_candidate_counts)
            | "ImpressionsPerItem" >> beam.CombinePerKey(MergeCountsFn())
            | "Items" >> beam.FlatMap(lambda kv: kv[1].items())
            | "Collect" >> beam.combiners.ToList())
        _ = counts | "WriteCounts" >> beam.Map(lambda c: _write_bytes(json.dumps(dict(c)).encode(), counts_path))
        if config.kind == "sid_spm":
            (counts
             | "TrainSentencePiece" >> beam.Map(_train_spm, sid_table.lookup(), config)
             | "WriteModel" >> beam.Map(_write_bytes, model_path))
    with FileSystems.open(counts_path) as f:
        impressions = json.loads(f.read().decode("utf-8"))
    if config.kind != "sid_spm":
        return impressions, None
    with FileSystems.open(model_path) as f:
        return impressions, f.read()


def _train_spm(item_counts, sids: dict, config: RepresentationConfig) -> bytes:
    per_sid: dict[tuple, int] = {}
    for item_id, count in item_counts:
        if item_id in sids:
            key = tuple(int(c) for c in sids[item_id])
            per_sid[key] = per_sid.get(key, 0) + count
    keys = sorted(per_sid)
    return spm_vocab.train_sid_spm(np.array(keys), np.array([per_sid[k] for k in keys]), config.codebook_size,
                                   config.vocab_size)


def _write_bytes(data: bytes, path: str) -> None:
    with FileSystems.create(path) as f:
        f.write(data)


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="corpus.parquet and logs/day=NNNN/")
    parser.add_argument("--sids", required=True, help="SID table directory (from materialize)")
    parser.add_argument("--output", required=True, help="transform output directory (replaced atomically)")
    parser.add_argument("--kind", choices=KINDS, default="sid_spm")
    parser.add_argument("--buckets", type=int, default=8192, help="random_hash buckets B")
    parser.add_argument("--ngram", type=int, default=2, help="sid_ngram N (divides L)")
    parser.add_argument("--vocab_size", type=int, default=8192, help="sid_spm table size V")
    parser.add_argument("--train_days", type=int, default=0,
                        help="analyse days up to this one (default: every day but the last)")
    return parser.parse_known_args(argv)


def transform_step(layout: DataLayout, days, train_days, config: RepresentationConfig, spm_model,
                   sid_table: data_io.SidTable, corpus: data_io.Corpus, options, staging: str) -> dict:
    """Pipeline 2: join, analyse the training days, transform every day; returns the counters."""
    sids = sid_table.lookup()
    first_days = {i: int(d) for i, d in zip(corpus.item_ids, corpus.first_day)}
    embeddings = dict(zip(corpus.item_ids, corpus.embeddings)) if config.kind == "dense" else {}
    metadata = tft.DatasetMetadata.from_feature_spec(raw_feature_spec(config))
    adapter = tensor_adapter_config(config)
    with beam.Pipeline(options=options) as p, tft_beam.Context(temp_dir=os.path.join(staging, "tmp")):
        joined = {}
        for day in days:
            joined[day] = (p | f"ReadDay{day}" >> beam.io.ReadFromTFRecord(_day_files(layout, day))
                           | f"BatchDay{day}" >> beam.BatchElements(min_batch_size=1, max_batch_size=BATCH_ROWS)
                           | f"JoinDay{day}" >> beam.ParDo(JoinItemFeatures(config), sids, first_days,
                                                                           embeddings))
        _ = (joined[days[-1]]
             | "LargestBatchOfLastDay" >> beam.combiners.Top.Of(1, key=lambda batch: batch.num_rows)
             | "ServingSample" >> beam.FlatMap(_serving_sample, config)
             | "WriteServingSample" >> beam.io.WriteToTFRecord(os.path.join(staging, SERVING_SAMPLE),
                                                               shard_name_template=""))
        training = [joined[d] for d in train_days] | "TrainingDays" >> beam.Flatten()
        transform_fn = (training, adapter) | "Analyze" >> tft_beam.AnalyzeDataset(
            make_preprocessing_fn(config, spm_model))
        for day in days:
            transformed, _ = ((joined[day], adapter), transform_fn) | f"TransformDay{day}" >> \
                tft_beam.TransformDataset(output_record_batches=True)
            (transformed
             | f"EncodeDay{day}" >> beam.FlatMap(lambda batch: example_coder.RecordBatchToExamples(batch[0]))
             | f"WriteDay{day}" >> beam.io.WriteToTFRecord(
                 transformed_day_prefix(staging, day), file_name_suffix=TRANSFORMED_SUFFIX))
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(staging)
        # The raw schema too, so a reader can parse raw tf.Examples without this code.
        _ = metadata | "WriteRawMetadata" >> tft_beam.WriteMetadata(
            os.path.join(staging, tft.TFTransformOutput.RAW_METADATA_DIR), p)
    return job_counters(p.result, NAMESPACE)


def build_argv(data_dir: str, sids: str, output: str, kind: str, buckets: int = 8192, ngram: int = 2,
               vocab_size: int = 8192, train_days: int = 0, beam_args=()) -> list[str]:
    """The command line of `run` (what `sidrec transform` and `sidrec experiment` call)."""
    return ["--data_dir", data_dir, "--sids", sids, "--output", output, "--kind", kind, "--buckets", str(buckets),
            "--ngram", str(ngram), "--vocab_size", str(vocab_size), "--train_days", str(train_days), *beam_args]


def run(argv=None) -> dict:
    """Runs both pipelines and publishes the output; returns {"output", "config", "counters"}."""
    args, beam_args = _parse(argv)
    layout = DataLayout(args.data_dir)
    days = layout.days()
    if len(days) < 2:
        raise ValueError(f"{layout.logs}: need at least two days (train, then evaluate), found {days}")
    train_days = [d for d in days if d <= (args.train_days or days[-2])]
    sid_table = data_io.read_sid_table(os.path.join(args.sids, "table"))
    corpus = data_io.read_corpus(layout.corpus)
    config = RepresentationConfig(kind=args.kind, buckets=args.buckets, ngram=args.ngram,
                                  vocab_size=args.vocab_size, num_levels=sid_table.sids.shape[1],
                                  codebook_size=_codebook_size(args.sids), embedding_dim=corpus.dim)
    options = PipelineOptions(beam_args)
    staging = publish.staging_dir(args.output)
    try:
        impressions, spm_model = count_step(layout, sid_table, train_days, config, options, staging)
        counters = transform_step(layout, days, train_days, config, spm_model, sid_table, corpus, options, staging)
        card = {"config": vars(config), "name": config.name, "table_rows": config.table_rows,
                "train_days": train_days, "days": days, "counters": counters}
        _write_bytes(json.dumps(card, indent=2).encode("utf-8"), os.path.join(staging, REPRESENTATION_CARD))
        sids = sid_table.lookup()
        impressed = [i for i in impressions if i in sids or config.kind in ("random_hash", "dense")]
        lookups = lookup_stats.lookup_stats(
            config, np.array([impressions[i] for i in impressed]),
            np.array([sids.get(i, np.zeros(config.num_levels, np.int64)) for i in impressed]), spm_model)
        _write_bytes(json.dumps(lookups, indent=2).encode("utf-8"), os.path.join(staging, LOOKUPS_FILE))
        if FileSystems.exists(os.path.join(staging, "tmp")):
            FileSystems.delete([os.path.join(staging, "tmp")])
        publish.publish(staging, args.output)
    except BaseException:
        publish.discard(staging)
        raise
    logging.info("transformed %d days with %s into %s", len(days), config.name, args.output)
    return {"output": args.output, "config": config, "counters": counters}


def _codebook_size(sids_dir: str) -> int:
    """K of the RQ-VAE that made the table (its stats.json), for the SID alphabet."""
    with open(os.path.join(sids_dir, "stats.json"), encoding="utf-8") as f:
        return int(json.load(f)["codebook_size"])


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    print(json.dumps(run()["counters"], indent=2))
