"""Beam job: join SIDs onto the logs, learn the SPM vocabulary, and run TF Transform day by day.

Two pipelines in one run, because SentencepieceTokenizer takes its model as a graph attribute
(bytes when the graph is built), so the model cannot be the tensor output of a TFT analyzer:
  1. count each candidate's impressions over the training days and, for sid_spm, train the BPE
     SentencePiece model on the impressed SIDs weighted by them (OUTPUT/spm/sid_spm.model).
  2. TF Transform: analyse the training days, transform every day into
     OUTPUT/transformed/day=NNNN/part-*.tfrecord.gz, and write OUTPUT/transform_fn and the schema.
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
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import publish
from pipeline import data_io
from pipeline import features as fk
from pipeline import lookup_stats, spm_vocab
from pipeline.layout import LOG_FILE_PATTERN, DataLayout
from pipeline.preprocessing import make_preprocessing_fn, raw_feature_spec
from pipeline.representation import KINDS, RepresentationConfig

NAMESPACE = "sidrec_transform"
SPM_MODEL = os.path.join("spm", "sid_spm.model")
LOOKUPS_FILE = "lookups.json"
TRANSFORMED_DIR = "transformed"


def _parse_log(record: bytes) -> dict:
    features = tf.train.Example.FromString(record).features.feature

    def strings(key):
        return [v.decode("utf-8") for v in features[key].bytes_list.value]

    return {fk.WATCH_ITEM_ID: strings(fk.WATCH_ITEM_ID)[0], fk.CANDIDATE_ITEM_ID: strings(fk.CANDIDATE_ITEM_ID)[0],
            fk.HISTORY_ITEM_IDS: strings(fk.HISTORY_ITEM_IDS), fk.CLICK: features[fk.CLICK].int64_list.value[0],
            fk.ENGAGEMENT: features[fk.ENGAGEMENT].float_list.value[0], fk.DAY: features[fk.DAY].int64_list.value[0]}


class JoinItemFeatures(beam.DoFn):
    """Adds SIDs (or -1 codes, counted), the candidate's first day and, for dense, the embeddings."""

    def __init__(self, config: RepresentationConfig):
        self._config = config

    def process(self, row, sids, items):
        config = self._config
        missing = [-1] * config.num_levels

        def sid(item_id, role):
            found = sids.get(item_id)
            if found is None:
                Metrics.counter(NAMESPACE, f"{role}_without_sid").inc()
                return missing
            return list(found)

        out = dict(row)
        first_day, embedding = items.get(row[fk.CANDIDATE_ITEM_ID], (-1, None))
        out[fk.CANDIDATE_FIRST_DAY] = first_day
        if config.kind in ("sid_ngram", "sid_spm"):
            out[fk.WATCH_SID] = sid(row[fk.WATCH_ITEM_ID], "watch")
            out[fk.CANDIDATE_SID] = sid(row[fk.CANDIDATE_ITEM_ID], "candidate")
            out[fk.HISTORY_SIDS] = [c for h in row[fk.HISTORY_ITEM_IDS] for c in sid(h, "history")]
        if config.kind == "dense":
            watch = items.get(row[fk.WATCH_ITEM_ID], (-1, None))[1]
            if watch is None or embedding is None:
                Metrics.counter(NAMESPACE, "rows_without_embedding").inc()
                return  # the dense baseline cannot represent an item without content
            out[fk.WATCH_EMBEDDING], out[fk.CANDIDATE_EMBEDDING] = list(watch), list(embedding)
        Metrics.counter(NAMESPACE, "rows_joined").inc()
        yield out


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
            | "Candidate" >> beam.Map(lambda r: _parse_log(r)[fk.CANDIDATE_ITEM_ID])
            | "ImpressionsPerItem" >> beam.combiners.Count.PerElement()
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


def run(argv=None) -> dict:
    """Runs both pipelines; returns {"output", "config", "counters"}."""
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
    except BaseException:
        publish.discard(staging)
        raise
    sids = sid_table.lookup()
    items = {i: (int(d), e if config.kind == "dense" else None)
             for i, d, e in zip(corpus.item_ids, corpus.first_day, corpus.embeddings)}
    metadata = tft.DatasetMetadata.from_feature_spec(raw_feature_spec(config))
    try:
        with beam.Pipeline(options=options) as p, tft_beam.Context(temp_dir=os.path.join(staging, "tmp")):
            joined = {}
            for day in days:
                joined[day] = (p | f"ReadDay{day}" >> beam.io.ReadFromTFRecord(_day_files(layout, day))
                               | f"ParseDay{day}" >> beam.Map(_parse_log)
                               | f"JoinDay{day}" >> beam.ParDo(JoinItemFeatures(config), sids, items))
            training = [joined[d] for d in train_days] | "TrainingDays" >> beam.Flatten()
            transform_fn = (training, metadata) | "Analyze" >> tft_beam.AnalyzeDataset(
                make_preprocessing_fn(config, spm_model))
            for day in days:
                transformed, out_metadata = ((joined[day], metadata), transform_fn) | f"TransformDay{day}" >> \
                    tft_beam.TransformDataset()
                coder = tft.coders.ExampleProtoCoder(out_metadata.schema)
                (transformed
                 | f"EncodeDay{day}" >> beam.Map(coder.encode)
                 | f"WriteDay{day}" >> beam.io.WriteToTFRecord(
                     os.path.join(staging, TRANSFORMED_DIR, f"day={day:04d}", "part"),
                     file_name_suffix=".tfrecord.gz"))
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(staging)
            # The raw schema too, so a reader can parse raw tf.Examples without this code.
            _ = metadata | "WriteRawMetadata" >> tft_beam.WriteMetadata(
                os.path.join(staging, tft.TFTransformOutput.RAW_METADATA_DIR), p)
        counters: dict[str, int] = {}
        for c in p.result.metrics().query()["counters"]:
            if c.key.metric.namespace == NAMESPACE:  # one entry per step: add them up
                counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed
        card = {"config": vars(config), "name": config.name, "table_rows": config.table_rows,
                "train_days": train_days, "days": days, "counters": counters}
        _write_bytes(json.dumps(card, indent=2).encode("utf-8"), os.path.join(staging, "representation.json"))
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
