"""Beam job: join SIDs onto the logs, learn the SPM vocabulary, and run TF Transform day by day.

Every log row goes through the log contract's row rules (`row_rules.check_log_batch`, the same code
as `sidrec validate`): rows that break them are written to OUTPUT/rejected/ with their file, row,
field and reason, and counted; nothing invalid reaches training.

Two pipelines in one run, because SentencepieceTokenizer takes its model as a graph attribute
(bytes when the graph is built), so the model cannot be the tensor output of a TFT analyzer:
  1. count each candidate's impressions over the training window (days before --eval_from) and,
     for sid_spm, train the BPE SentencePiece model on the impressed SIDs weighted by them
     (OUTPUT/spm/sid_spm.model).
  2. TF Transform: analyse the training window, transform every day into
     OUTPUT/transformed/day=NNNN/part-*.tfrecord, and write OUTPUT/transform_fn and the schema.
Nothing is learned from an evaluation day (pipeline.core.protocol). Items without a SID get codes of -1
(the table's OOV row) and are counted. OUTPUT/lookups.json holds the embedding lookups per item by
popularity bucket (the paper's Figure 4). OUTPUT/fingerprint.json records what the output was made
from; a rerun with the same inputs reuses it.

  python -m beam_jobs.transform --data_dir runs/demo/data --sids runs/demo/sids \\
      --output runs/demo/transform --kind sid_spm --vocab_size 8192
"""

import json
import logging

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

from pipeline.core.tf_env import tf
import tensorflow_transform as tft  # noqa: I100  (after the TF set-up)
import tensorflow_transform.beam as tft_beam

from beam_jobs.counters import job_counters
from beam_jobs.options import SHIPPING_HELP, pipeline_options
from beam_jobs.record_batches_io import WriteTFRecordBatches
from beam_jobs.item_features_join import (NAMESPACE, ItemFeatureRows, ItemTablesFromFiles, JoinItemFeatures,
                                          JoinItemFeaturesByKey, ids)
from beam_jobs.sid_stats import MergeCountsFn, bucketed_counts
from pipeline.core import config_flags, contracts, fingerprint, row_rules
from pipeline.core import features as fk
from pipeline.core.examples import to_examples
from pipeline.core.cards import read_item_impressions, read_json, read_representation, read_sid_stats
from pipeline.core.configs import SHUFFLE_JOIN_ABOVE, TransformConfig  # noqa: F401  (re-exported)
from pipeline.core.layout import LOG_FILE_PATTERN, TRANSFORMED_SUFFIX, DataLayout, SidTableLayout, TransformLayout
from pipeline.core.protocol import split_days
from pipeline.core.publish import absolute_path, published
from pipeline.core.records import SidTable
from pipeline.core.representation import RepresentationConfig, split_kind
from pipeline.data import corpus_io, log_io, sid_table_io
from pipeline.sid import lookup_stats, spm_vocab
from pipeline.sid.preprocessing import make_preprocessing_fn, raw_feature_spec, serving_feature_spec

BATCH_ROWS = 4096
COUNT_BUCKETS = 64
SERVING_SAMPLE_ROWS = 64
ANALYSIS_NAMESPACE = NAMESPACE + "_analysis"  # the analysis pass's second read: not the job's counters
# Bump when a change to this job changes its output for the same inputs (old outputs then rebuild).
OUTPUT_FORMAT = 5  # 5: item age and candidate key for the evaluation slices; 4: the card records the RQ-VAE


class ReadNumberedBatches(beam.DoFn):
    """(day, file) -> (day, file, first row, serialized records) in batches of BATCH_ROWS.

    Rows keep their number in the file, so a rejected row can be named. A log file is read whole by
    one worker: days are sharded into files (impressions-SSSSS-of-NNNNN), the unit of parallelism.
    """

    def process(self, element):
        day, path = element
        first_row = 0
        for records in log_io.read_tfrecord_batches(path, BATCH_ROWS):
            yield day, path, first_row, records
            first_row += len(records)


class CheckLogRows(beam.DoFn):
    """Applies the log contract's row rules; valid rows go on as a RecordBatch, the others aside.

    Main output: (day, decoded RecordBatch of the valid rows). Output "rejected": one JSON line per
    bad row with its file, row, field and reason (and the record), as `sidrec validate` writes them.
    """

    REJECTED = "rejected"

    def __init__(self, max_history: int, namespace: str = NAMESPACE):
        self._max_history, self._namespace = max_history, namespace

    def setup(self):
        from tfx_bsl.coders import example_coder

        self._decoder = example_coder.ExamplesToRecordBatchDecoder()

    def process(self, element):
        day, path, first_row, records = element
        batch = log_io.decode_log_records(self._decoder, records, path, first_row)
        checked = row_rules.check_log_batch(batch, path, day, self._max_history)
        Metrics.counter(self._namespace, "rows_read").inc(len(records))
        Metrics.counter(self._namespace, "rows_rejected").inc(len(checked.failures))  # reported even when 0
        for row, (field, reason) in sorted(checked.failures.items()):
            Metrics.counter(self._namespace, f"rejected_{field}").inc()
            rejection, record = row_rules.log_rejection(path, first_row + row, field, reason, records[row])
            yield beam.pvalue.TaggedOutput(self.REJECTED, contracts.rejection_json(rejection, record))
        if checked.ok.any():
            yield day, batch.filter(pa.array(checked.ok))


@beam.ptransform_fn
def ReadCheckedLogs(pcoll, layout: DataLayout, day: int, max_history: int,  # noqa: N802 (Beam composite)
                    namespace: str = NAMESPACE):
    """One day's log files -> DoOutputsTuple(valid=(day, RecordBatch), rejected=JSON lines)."""
    pattern = layout.day_pattern(day)
    files = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    if not files:
        raise contracts.ContractError(f"{layout.day_dir(day)}: no files matching {LOG_FILE_PATTERN}")
    return (pcoll.pipeline
            | "Files" >> beam.Create([(day, f) for f in files])
            | "Read" >> beam.ParDo(ReadNumberedBatches())
            | "Check" >> beam.ParDo(CheckLogRows(max_history, namespace)).with_outputs(CheckLogRows.REJECTED,
                                                                                     main="valid"))


def _serving_sample(batches: list[pa.RecordBatch], config: RepresentationConfig) -> list[bytes]:
    """Up to SERVING_SAMPLE_ROWS rows as serving requests: the labels and evaluation keys dropped."""
    keys = list(serving_feature_spec(raw_feature_spec(config)))
    sample = batches[0].select(keys).slice(0, SERVING_SAMPLE_ROWS)
    return to_examples(sample)


def _candidate_counts(element) -> list:
    """Impressions per candidate in one batch of valid rows, pre-aggregated per hash bucket."""
    _, batch = element
    return list(bucketed_counts(ids(batch, fk.CANDIDATE_ITEM_ID), COUNT_BUCKETS))


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


def count_impressions(p, valid: dict, train_days, counts_prefix: str) -> None:
    """Adds to p: impressions per candidate over the training days' valid rows, as sharded JSON lines.

    Counted per day before the days meet: the local runner materialises a Flatten's input whole, so
    flattening the days' rows held the training window in memory (most of the 10x peak).
    """
    _ = ([valid[d] | f"CandidatesPerBucketDay{d}" >> beam.FlatMap(_candidate_counts) for d in train_days]
         | "AllTrainingDays" >> beam.Flatten()
         | "ImpressionsPerItem" >> beam.CombinePerKey(MergeCountsFn())
         | "Items" >> beam.FlatMap(lambda kv: kv[1].items())
         | "ToJson" >> beam.Map(json.dumps)
         | "WriteCounts" >> beam.io.WriteToText(counts_prefix, file_name_suffix=".jsonl"))


def count_step(layout: DataLayout, sid_table: SidTable, train_days, config, options, staging: str):
    """Pipeline 1 (sid_spm only): impressions per candidate over the training window, then the BPE model.

    Rows that break the row rules are left out here too; pipeline 2 writes them aside. The counts are
    written as sharded JSON lines (no worker gathers them), then the launching process reads them and
    trains the BPE model (one model from one list, as a single worker would), so a vocabulary the data
    cannot support raises VocabularyUnsupported to the caller. Other kinds count inside pipeline 2.

    Returns:
      ({item_id: impressions}, SentencePiece model bytes).
    """
    with beam.Pipeline(options=options) as p:
        valid = {d: (p | f"ReadDay{d}" >> ReadCheckedLogs(layout, d, config.max_history)).valid for d in train_days}
        count_impressions(p, valid, train_days, TransformLayout(staging).item_impressions)
    impressions = read_item_impressions(staging)
    model = _train_spm(impressions.items(), sid_table.lookup(), config)
    _write_bytes(model, TransformLayout(staging).spm_model)
    return impressions, model


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


def join_step(p, valid: dict, config: RepresentationConfig, shuffle_join: bool, sids_dir: str, corpus_path: str,
              shared: Shared, prefix: str = "", namespace: str = NAMESPACE) -> dict:
    """Each day's valid log rows with their item features: {day: PCollection of RecordBatch}.

    In memory (each worker process loads the tables once, shared by every day's DoFn), or by key
    (beam_jobs.item_features_join.JoinItemFeaturesByKey), with Beam reading the tables' Parquet files.
    """
    if not shuffle_join:
        tables = ItemTablesFromFiles(sids_dir, corpus_path, config)
        return {day: rows | f"{prefix}JoinDay{day}" >> beam.ParDo(JoinItemFeatures(config, tables, shared, namespace))
                for day, rows in valid.items()}
    days = sorted(valid)
    item_rows = p | f"{prefix}ItemTables" >> ItemFeatureRows(
        FileSystems.join(SidTableLayout(sids_dir).table, "*.parquet"), corpus_path, config)
    joined = (list(valid.values())
              | f"{prefix}AllDays" >> beam.Flatten()
              | f"{prefix}JoinByKey" >> JoinItemFeaturesByKey(item_rows, config)
              | f"{prefix}SplitDays" >> beam.Partition(lambda element, _: days.index(element[0]), len(days)))
    return {day: joined[i] | f"{prefix}BatchesOfDay{day}" >> beam.Map(lambda element: element[1])
            for i, day in enumerate(days)}


def transform_step(layout: DataLayout, days, train_days, config: RepresentationConfig, spm_model, options,
                   staging: str, sids_dir: str, shuffle_join: bool, known_sids=None, count: bool = False) -> dict:
    """Pipeline 2: join, analyse the training days, transform every day; returns the counters.

    `known_sids` (sid_spm): the SID table's SIDs, whose pieces the graph holds (pipeline.sid.known_pieces).
    `count`: the impressions per candidate are counted here, from the same reads (no pipeline 1).
    """
    metadata = tft.DatasetMetadata.from_feature_spec(raw_feature_spec(config))
    adapter = tensor_adapter_config(config)
    out = TransformLayout(staging)
    with beam.Pipeline(options=options) as p, tft_beam.Context(temp_dir=out.tmp):
        valid, rejected = {}, []
        for day in days:
            logs = p | f"ReadDay{day}" >> ReadCheckedLogs(layout, day, config.max_history)
            rejected.append(logs.rejected)
            valid[day] = logs.valid
        if count:
            count_impressions(p, valid, train_days, out.item_impressions)
        shared = Shared()
        joined = join_step(p, valid, config, shuffle_join, sids_dir, layout.corpus, shared)
        preprocessing_fn = make_preprocessing_fn(config, spm_model, known_sids)
        if not has_analyzers(preprocessing_fn, adapter):
            # Nothing to fit (vocabularies and the SPM model were fitted by the count step): the
            # transform_fn needs no rows, so each day streams from read to write, never held whole.
            training = p | "NoRowsToAnalyse" >> beam.Create([], reshuffle=False)
        elif shuffle_join:
            training = [joined[d] for d in train_days] | "TrainingDays" >> beam.Flatten()
        else:
            # The analysis reads the training days a second time (uncounted), so the transform of a
            # day streams from read to write while the analysis runs, instead of every day waiting,
            # whole, for the transform graph (what a local runner would hold in memory).
            again = {day: (p | f"AnalysisReadDay{day}" >> ReadCheckedLogs(layout, day, config.max_history,
                                                                           ANALYSIS_NAMESPACE)).valid
                     for day in train_days}
            analysed = join_step(p, again, config, shuffle_join, sids_dir, layout.corpus, shared, "Analysis",
                                 ANALYSIS_NAMESPACE)
            training = [analysed[d] for d in train_days] | "TrainingDays" >> beam.Flatten()
        _ = (rejected
             | "AllRejected" >> beam.Flatten()
             | "WriteRejected" >> beam.io.WriteToText(FileSystems.join(out.rejected, "part"),
                                                      file_name_suffix=".jsonl"))
        # The warm-up requests come from the training window too: nothing in the output but the
        # evaluation days' own examples depends on an evaluation day.
        _ = (joined[train_days[-1]]
             | "LargestBatchOfLastTrainingDay" >> beam.combiners.Top.Of(1, key=lambda batch: batch.num_rows)
             | "ServingSample" >> beam.FlatMap(_serving_sample, config)
             | "WriteServingSample" >> beam.io.WriteToTFRecord(out.serving_sample,
                                                               shard_name_template=""))
        transform_fn = (training, adapter) | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn)
        for day in days:
            transformed, _ = ((joined[day], adapter), transform_fn) | f"TransformDay{day}" >> \
                tft_beam.TransformDataset(output_record_batches=True)
            (transformed
             | f"EncodeDay{day}" >> beam.Map(lambda batch: to_examples(batch[0]))
             | f"WriteDay{day}" >> WriteTFRecordBatches(out.day_prefix(day), file_name_suffix=TRANSFORMED_SUFFIX))
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(staging)
        # The raw schema too, so a reader can parse raw tf.Examples without this code.
        _ = metadata | "WriteRawMetadata" >> tft_beam.WriteMetadata(
            FileSystems.join(staging, tft.TFTransformOutput.RAW_METADATA_DIR), p)
    return job_counters(p.result, NAMESPACE)


def has_analyzers(preprocessing_fn, adapter) -> bool:
    """Whether a TF Transform analyzer in `preprocessing_fn` needs the data (a graph with none needs no rows)."""
    from tensorflow_transform import analyzer_nodes, impl_helper
    from tfx_bsl.tfxio import tensor_adapter

    graph, _, _ = impl_helper.trace_preprocessing_function(
        preprocessing_fn, tensor_adapter.TensorAdapter(adapter).TypeSpecs(), use_tf_compat_v1=False)
    return bool(graph.get_collection(analyzer_nodes.TENSOR_REPLACEMENTS))


def representation_config(config: TransformConfig, num_levels: int, codebook_size: int,
                          embedding_dim: int) -> RepresentationConfig:
    """The representation the flags ask for, on SIDs of L levels and K codes and embeddings of D."""
    kind, hybrid = split_kind(config.kind)
    return RepresentationConfig(kind=kind, buckets=config.buckets, ngram=config.ngram, vocab_size=config.vocab_size,
                                num_levels=num_levels, codebook_size=codebook_size, embedding_dim=embedding_dim,
                                max_history=config.max_history, prefix_lengths=config.prefix_lengths,
                                id_buckets=config.id_buckets if hybrid else 0)


def input_fingerprint(layout: DataLayout, sids_dir: str, config: RepresentationConfig,
                      eval_from: int) -> fingerprint.Fingerprint:
    """What a transform output is made from: logs and corpus bytes, the SID table, the config, T."""
    inputs = {"stage": "transform", "format": OUTPUT_FORMAT, "representation": config.result_fields(),
              "eval_from": eval_from, "corpus": fingerprint.digest_files([layout.corpus]),
              "logs": {f"day={d:04d}": fingerprint.digest_files(log_io.day_files(layout, d)) for d in layout.days()}}
    if config.has_sids:
        recorded = fingerprint.read(sids_dir)
        inputs["sid_table"] = (recorded["fingerprint"] if recorded else
                               fingerprint.digest_files(tf.io.gfile.glob(FileSystems.join(SidTableLayout(sids_dir).table,
                                                                                          "*"))))
    return fingerprint.Fingerprint(inputs)


def run(config: TransformConfig, beam_args=(), log=logging.info) -> dict:
    """Runs both pipelines and publishes the output, or reuses an output made from the same inputs.

    Returns:
      {"output", "config" (the RepresentationConfig), "counters", "reused"}.
    """
    layout = DataLayout(config.data_dir)
    split = split_days(layout.logged_days(), config.eval_from)
    days, train_days = list(split.days), split.train_window
    sid_table = sid_table_io.read_sid_table(SidTableLayout(config.sids).table)
    corpus = corpus_io.read_corpus(layout.corpus)
    representation = representation_config(config, num_levels=sid_table.sids.shape[1],
                                           codebook_size=_codebook_size(config.sids), embedding_dim=corpus.dim)
    made_from = input_fingerprint(layout, config.sids, representation, split.eval_from)
    output = config.output
    if fingerprint.up_to_date(output, made_from, config.if_changed, "transform output", log):
        counters = read_representation(output)["counters"]
        log(f"transform output {output} is up to date (fingerprint {made_from.value}): reusing it")
        return {"output": output, "config": representation, "counters": counters, "reused": True}
    options = pipeline_options(beam_args, log)
    with published(output) as staging:
        out = TransformLayout(staging)
        impressions, spm_model = (count_step(layout, sid_table, train_days, representation, options, staging)
                                  if representation.uses_spm else (None, None))
        shuffle_join = max(len(sid_table.item_ids), corpus.size) > config.shuffle_join_above
        log(f"joining item features {'by key (CoGroupByKey)' if shuffle_join else 'from tables loaded once per worker process'}: "
            f"{max(len(sid_table.item_ids), corpus.size):,} items, threshold {config.shuffle_join_above:,}")
        counters = transform_step(layout, days, train_days, representation, spm_model, options, staging,
                                  config.sids, shuffle_join, sid_table.sids if representation.uses_spm else None,
                                  count=impressions is None)
        if impressions is None:
            impressions = read_item_impressions(staging)
        card = {"config": representation.card(), "name": representation.name, "table_rows": representation.table_rows,
                "train_days": train_days, "eval_from": split.eval_from, "eval_days": split.eval_days,
                "days": days, "counters": counters, "fingerprint": made_from.value,
                # What the daily path (beam_jobs.transform_day) reads: the join's size, each day's log files.
                "items": max(len(sid_table.item_ids), corpus.size),
                "day_files": {str(d): log_io.day_signature(layout, d) for d in days}}
        if representation.has_sids:
            card["rqvae"] = sid_table_rqvae(config.sids, sid_table)
        _write_bytes(json.dumps(card, indent=2).encode("utf-8"), out.card)
        sids = sid_table.lookup()
        impressed = [i for i in impressions if i in sids or not representation.has_sids]
        lookups = lookup_stats.lookup_stats(
            representation, np.array([impressions[i] for i in impressed]),
            np.array([sids.get(i, np.zeros(representation.num_levels, np.int64)) for i in impressed]), spm_model)
        _write_bytes(json.dumps(lookups, indent=2).encode("utf-8"), out.lookups)
        if FileSystems.exists(out.tmp):
            FileSystems.delete([out.tmp])
        made_from.write(staging)
    if counters.get("rows_rejected"):
        log(f"{counters['rows_rejected']:,} log rows rejected, written to {TransformLayout(output).rejected}")
    logging.info("transformed %d days with %s into %s", len(days), representation.name, output)
    return {"output": output, "config": representation, "counters": counters, "reused": False}


def sid_table_rqvae(sids_dir: str, sid_table: SidTable) -> dict:
    """The RQ-VAE that made the SID table: its version and export directory (the exports hold it)."""
    stats = read_sid_stats(sids_dir)
    if stats.get("rqvae_version") != sid_table.rqvae_version:
        raise contracts.ContractError(f"{SidTableLayout(sids_dir).stats}: statistics of RQ-VAE "
                                      f"{stats.get('rqvae_version')}, but the table holds SIDs of "
                                      f"{sid_table.rqvae_version}: materialise the table again")
    return {"version": sid_table.rqvae_version, "export": absolute_path(stats["model"])}


def _codebook_size(sids_dir: str) -> int:
    """K of the RQ-VAE that made the table (its stats.json), for the SID alphabet."""
    return int(read_sid_stats(sids_dir)["codebook_size"])


def describe(summary: dict) -> str:
    """The job's counters, the table size and the lookups per item by popularity bucket."""
    lookups = read_json(TransformLayout(summary["output"]).lookups, "lookup statistics", "sidrec transform")
    config = summary["config"]
    return ("counters: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary["counters"].items())) + "\n"
            f"{config.name}: {config.table_rows:,} table rows; lookups per item "
            + ", ".join(f"{b} {lookups[b]['mean_lookups_per_item']:.2f}" for b in ("head", "torso", "tail")
                        if lookups[b]["mean_lookups_per_item"] is not None)
            + f"\ntransform output: {summary['output']}")


def main(argv=None) -> dict:
    """`python -m beam_jobs.transform --data_dir ... --sids ... --output ... --kind ... [Beam flags]`."""
    return run(*config_flags.parse_known(TransformConfig, argv, __doc__, SHIPPING_HELP))


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    print(json.dumps(main()["counters"], indent=2))
