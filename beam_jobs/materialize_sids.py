"""Beam job: materialise Semantic IDs over a corpus with the frozen RQ-VAE SavedModel.

Reads the corpus (Parquet, or TFRecord of tf.Example), validates every row, resolves duplicated
ids by an order-independent rule, runs the SavedModel through RunInference, and writes the SID
table (sharded Parquet and TFRecord), a dead-letter output of rejected rows with their reason, and
SID statistics computed with combiners. Outputs appear atomically: a failed run leaves none.

  python -m beam_jobs.materialize_sids --corpus runs/demo/data/corpus.parquet \\
      --model runs/demo/rqvae/export --output runs/demo/sids
  # On Dataflow: the same, plus --runner=DataflowRunner --project P --region R
  #   --temp_location gs://B/tmp --setup_file ./setup.py  (paths may be gs://)

Incremental mode (`--existing_table`): items already in that table keep their SID; only missing
items go through the model (the cold-start path for new items).
"""

import argparse
import hashlib
import json
import logging
import os

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from beam_jobs import publish
from beam_jobs.sid_model_handler import SidModelHandler
from beam_jobs.sid_stats import SidStatistics
from models.rqvae_savedmodel import METADATA_PATH, OUTPUT_SID
from pipeline import contracts
from pipeline import features as fk
from pipeline import sid_quality

NAMESPACE = "sidrec_materialize"
REJECTED = "rejected"
TABLE_DIR, TFRECORD_DIR, REJECTED_DIR, STATS_FILE = "table", "tfrecord", "rejected", "stats.json"
SID_SCHEMA = pa.schema([(fk.ITEM_ID, pa.string()), (fk.SID, pa.list_(pa.int64())), (fk.RQVAE_VERSION, pa.string())])


# ------------------------------------------------------------------------------ model location

def resolve_model(path: str) -> str:
    """An export version directory, or the newest integer version under a base directory."""
    if FileSystems.exists(FileSystems.join(path, "saved_model.pb")):
        return path
    matches = FileSystems.match([FileSystems.join(path, "*", "saved_model.pb")])[0].metadata_list
    versions = [os.path.basename(os.path.dirname(m.path)) for m in matches]
    versions = sorted(int(v) for v in versions if v.isdigit())
    if not versions:
        raise ValueError(f"--model {path}: neither a SavedModel nor a directory of integer versions")
    return FileSystems.join(path, str(versions[-1]))


def read_model_card(model_path: str) -> dict:
    with FileSystems.open(FileSystems.join(model_path, METADATA_PATH)) as f:
        return json.loads(f.read().decode("utf-8"))


# ------------------------------------------------------------------------------------ reading

def _reject(field: str, reason: str, record: dict):
    Metrics.counter(NAMESPACE, "rows_rejected").inc()
    Metrics.counter(NAMESPACE, f"rejected_{field}").inc()
    return beam.pvalue.TaggedOutput(REJECTED, {"field": field, "reason": reason, "record": record})


class ParseExample(beam.DoFn):
    """tf.Example corpus records -> the same dict rows that Parquet gives."""

    def process(self, record: bytes):
        import tensorflow as tf

        features = tf.train.Example.FromString(record).features.feature
        row = {}
        if fk.ITEM_ID in features and features[fk.ITEM_ID].bytes_list.value:
            row[fk.ITEM_ID] = features[fk.ITEM_ID].bytes_list.value[0].decode("utf-8")
        if fk.EMBEDDING in features:
            row[fk.EMBEDDING] = list(features[fk.EMBEDDING].float_list.value)
        if fk.FIRST_DAY in features and features[fk.FIRST_DAY].int64_list.value:
            row[fk.FIRST_DAY] = int(features[fk.FIRST_DAY].int64_list.value[0])
        yield row


class ExplodeAndValidate(beam.DoFn):
    """Parquet record batches (or dict rows) -> (item_id, (first_day, digest, embedding)) or rejects."""

    def __init__(self, dim: int):
        self._dim = dim

    def process(self, element):
        if isinstance(element, pa.Table):
            yield from self._validate_table(element)
        else:
            Metrics.counter(NAMESPACE, "rows_read").inc()
            yield from self._validate(element)

    def _validate_table(self, table: pa.Table):
        """Vectorised over a Parquet record batch: embeddings never become Python lists."""
        Metrics.counter(NAMESPACE, "rows_read").inc(table.num_rows)
        names = table.column_names
        ids = table.column(fk.ITEM_ID).to_pylist() if fk.ITEM_ID in names else [None] * table.num_rows
        days = table.column(fk.FIRST_DAY).to_pylist() if fk.FIRST_DAY in names else [None] * table.num_rows
        if fk.EMBEDDING not in names:
            values, lengths, missing = np.zeros(0, np.float32), np.zeros(table.num_rows, np.int64), \
                np.ones(table.num_rows, bool)
        else:
            values, lengths, missing = contracts.list_column(table.column(fk.EMBEDDING))
            values = values.astype(np.float32, copy=False)
        offsets = np.cumsum(lengths) - lengths
        for row, (item_id, first_day) in enumerate(zip(ids, days)):
            vector = None if missing[row] else values[offsets[row]:offsets[row] + lengths[row]].copy()
            yield from self._validate({fk.ITEM_ID: item_id, fk.FIRST_DAY: first_day, fk.EMBEDDING: vector})

    def _validate(self, row):
        item_id, embedding, first_day = row.get(fk.ITEM_ID), row.get(fk.EMBEDDING), row.get(fk.FIRST_DAY)
        listed = embedding.tolist() if isinstance(embedding, np.ndarray) else embedding
        record = {fk.ITEM_ID: item_id, fk.FIRST_DAY: first_day, fk.EMBEDDING: listed}
        if not isinstance(item_id, str) or not item_id:
            yield _reject(fk.ITEM_ID, "missing or empty item id", record)
            return
        if embedding is None:
            yield _reject(fk.EMBEDDING, "missing embedding", record)
            return
        vector = np.asarray(embedding, dtype=np.float32)
        if vector.shape != (self._dim,):
            yield _reject(fk.EMBEDDING, f"wrong dimension: {vector.size} values, expected {self._dim}", record)
        elif not np.isfinite(vector).all():
            yield _reject(fk.EMBEDDING, "non-finite value (NaN or inf) in the embedding", record)
        elif first_day is None or first_day < 0:
            yield _reject(fk.FIRST_DAY, f"first_day {first_day}, expected an int >= 0", record)
        else:
            digest = hashlib.sha1(vector.tobytes()).hexdigest()  # same rule as pipeline.contracts
            yield item_id, (int(first_day), digest, vector)


def keep_one_per_id(kv):
    """Duplicated ids: keep the earliest first_day, then the smallest embedding digest (any order)."""
    item_id, rows = kv
    rows = sorted(rows, key=lambda r: (r[0], r[1]))
    kept = rows[0]
    yield item_id, kept[2]
    for first_day, digest, vector in rows[1:]:
        if (first_day, digest) == kept[:2]:
            reason = "duplicate item id: an identical row was kept"
        else:
            reason = (f"duplicate item id: kept the row with first_day {kept[0]} and embedding digest "
                      f"{kept[1][:12]} (earliest first_day, then smallest digest)")
        yield _reject(fk.ITEM_ID, reason, {fk.ITEM_ID: item_id, fk.FIRST_DAY: first_day,
                                           fk.EMBEDDING: vector.tolist()})


class SplitKnownItems(beam.DoFn):
    """Incremental mode: items already in the table keep their SID; the rest go to the model."""

    KNOWN = "known"

    def __init__(self, version: str):
        self._version = version

    def process(self, kv):
        item_id, grouped = kv
        embeddings, existing = list(grouped["corpus"]), list(grouped["table"])
        embedding = embeddings[0] if embeddings else None
        if existing:
            sid, version = existing[0]
            if version != self._version:
                raise ValueError(f"--existing_table holds SIDs of RQ-VAE {version} (item {item_id}), "
                                 f"but --model is {self._version}: re-materialise the whole corpus")
            Metrics.counter(NAMESPACE, "rows_already_materialised").inc()
            yield beam.pvalue.TaggedOutput(self.KNOWN, (item_id, np.asarray(sid, np.int64), embedding))
        elif embedding is not None:
            yield item_id, embedding


# ------------------------------------------------------------------------------------ writing

def _to_example(row, version: str) -> bytes:
    import tensorflow as tf

    item_id, sid, _ = row
    return tf.train.Example(features=tf.train.Features(feature={
        fk.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[item_id.encode()])),
        fk.SID: tf.train.Feature(int64_list=tf.train.Int64List(value=sid.tolist())),
        fk.RQVAE_VERSION: tf.train.Feature(bytes_list=tf.train.BytesList(value=[version.encode()])),
    })).SerializeToString()


def _json_line(rejection: dict) -> str:
    return json.dumps(rejection, default=lambda v: v.tolist() if isinstance(v, np.ndarray) else repr(v))


def _failed_inference(failure):
    batch, exception = failure
    for item_id, embedding in batch:
        Metrics.counter(NAMESPACE, "rows_rejected").inc()
        Metrics.counter(NAMESPACE, "rejected_inference").inc()
        yield {"field": fk.EMBEDDING, "reason": f"inference failed: {exception!r}",
               "record": {fk.ITEM_ID: item_id, fk.EMBEDDING: np.asarray(embedding).tolist()}}


def _materialised(keyed_result):
    item_id, result = keyed_result
    Metrics.counter(NAMESPACE, "rows_materialised").inc()
    return item_id, np.asarray(result.inference[OUTPUT_SID], np.int64), result.example


class _WriteJson(beam.DoFn):
    def __init__(self, path: str):
        self._path = path

    def process(self, report):
        with FileSystems.create(self._path) as f:
            f.write(json.dumps(report, indent=2).encode("utf-8"))


# ----------------------------------------------------------------------------------- pipeline

def build_pipeline(p: beam.Pipeline, args, model_path: str, card: dict, staging: str) -> None:
    """Adds every step of the job to p, writing under staging."""
    version = card["rqvae_version"]
    num_levels, codebook_size, dim = card["num_levels"], card["codebook_size"], card["input_dim"]

    if args.corpus.endswith(".parquet") or args.corpus.endswith(".parquet*"):
        raw = p | "ReadCorpus" >> beam.io.ReadFromParquetBatched(args.corpus)
    else:
        raw = (p | "ReadCorpus" >> beam.io.ReadFromTFRecord(args.corpus)
               | "ParseExamples" >> beam.ParDo(ParseExample()))
    checked = raw | "Validate" >> beam.ParDo(ExplodeAndValidate(dim)).with_outputs(REJECTED, main="valid")
    unique = (checked.valid
              | "GroupById" >> beam.GroupByKey()
              | "KeepOnePerId" >> beam.FlatMap(keep_one_per_id).with_outputs(REJECTED, main="kept"))

    to_infer, known = unique.kept, None
    if args.existing_table:
        table = (p | "ReadExistingTable" >> beam.io.ReadFromParquet(
                     FileSystems.join(args.existing_table, TABLE_DIR, "*.parquet"))
                 | "KeyExisting" >> beam.Map(lambda r: (r[fk.ITEM_ID], (r[fk.SID], r[fk.RQVAE_VERSION]))))
        split = ({"corpus": unique.kept, "table": table}
                 | "JoinExisting" >> beam.CoGroupByKey()
                 | "SplitKnown" >> beam.ParDo(SplitKnownItems(version)).with_outputs(
                     SplitKnownItems.KNOWN, main="new"))
        to_infer, known = split.new, split[SplitKnownItems.KNOWN]

    handler = KeyedModelHandler(SidModelHandler(model_path, args.min_batch_size, args.max_batch_size))
    inferred, failures = to_infer | "RunInference" >> RunInference(handler).with_exception_handling()
    new_rows = inferred | "ToSidRows" >> beam.Map(_materialised)
    sid_rows = (new_rows, known) | "AllSidRows" >> beam.Flatten() if known is not None else new_rows

    shards = {"num_shards": args.num_shards} if args.num_shards else {}
    (sid_rows
     | "ToParquetRows" >> beam.Map(lambda r: {fk.ITEM_ID: r[0], fk.SID: r[1].tolist(), fk.RQVAE_VERSION: version})
     | "WriteParquet" >> beam.io.WriteToParquet(FileSystems.join(staging, TABLE_DIR, "part"), SID_SCHEMA,
                                                file_name_suffix=".parquet", **shards))
    (sid_rows
     | "ToExamples" >> beam.Map(_to_example, version)
     | "WriteTFRecord" >> beam.io.WriteToTFRecord(FileSystems.join(staging, TFRECORD_DIR, "part"),
                                                  file_name_suffix=".tfrecord.gz", **shards))
    failed = failures.failed_inferences | "FailedInference" >> beam.FlatMap(_failed_inference)
    ((checked[REJECTED], unique[REJECTED], failed)
     | "AllRejected" >> beam.Flatten()
     | "RejectedToJson" >> beam.Map(_json_line)
     | "WriteRejected" >> beam.io.WriteToText(FileSystems.join(staging, REJECTED_DIR, "part"),
                                              file_name_suffix=".jsonl", num_shards=1))
    (sid_rows
     | "Statistics" >> SidStatistics(num_levels, codebook_size, args.sample_size)
     | "AddVersion" >> beam.Map(lambda r: dict(r, rqvae_version=version, model=model_path))
     | "WriteStats" >> beam.ParDo(_WriteJson(FileSystems.join(staging, STATS_FILE))))


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="corpus file pattern: *.parquet, else TFRecord")
    parser.add_argument("--model", required=True, help="RQ-VAE export: a version dir or the base dir (newest)")
    parser.add_argument("--output", required=True, help="SID table directory (replaced atomically)")
    parser.add_argument("--existing_table", default="", help="incremental: keep SIDs of items in this table")
    parser.add_argument("--num_shards", type=int, default=0, help="output shards (0: the runner decides)")
    parser.add_argument("--sample_size", type=int, default=sid_quality.DEFAULT_SAMPLE_SIZE,
                        help="items in the prefix-similarity sample (bottom-k by id fingerprint)")
    # BatchElements grows batches adaptively from here. A minimum above 1 corrupted elements under
    # the multi-threaded DirectRunner of Beam 2.77 (seen here), so it stays at 1 by default.
    parser.add_argument("--min_batch_size", type=int, default=1)
    parser.add_argument("--max_batch_size", type=int, default=4096)
    return parser.parse_known_args(argv)


def _counters(result) -> dict:
    counters = {}
    for c in result.metrics().query()["counters"]:
        if c.key.metric.namespace == NAMESPACE:
            counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed
    return counters


def run(argv=None, save_main_session: bool = False) -> dict:
    """Runs the job; unknown flags go to PipelineOptions (--runner, --project, ...).

    Returns:
      {"output", "counters", "stats"} once the outputs are published.
    """
    args, beam_args = _parse(argv)
    options = PipelineOptions(beam_args, save_main_session=save_main_session)
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = "DirectRunner"
        direct = options.view_as(DirectOptions)
        if "--direct_running_mode" not in " ".join(beam_args):
            # One worker process per core. Beam 2.77's multi_threading mode corrupted elements of
            # this pipeline here ("Invalid PaneInfoEncoding"), so it is not the default.
            direct.direct_running_mode = "multi_processing"
            direct.direct_num_workers = os.cpu_count() or 1
    model_path = resolve_model(args.model)
    card = read_model_card(model_path)
    staging = publish.staging_dir(args.output)
    logging.info("materialising SIDs of %s with RQ-VAE %s into %s", args.corpus, card["rqvae_version"], args.output)
    try:
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, args, model_path, card, staging)
        result = p.result
        publish.publish(staging, args.output)
    except BaseException:
        publish.discard(staging)
        raise
    counters = _counters(result)
    with FileSystems.open(FileSystems.join(args.output, STATS_FILE)) as f:
        stats = json.loads(f.read().decode("utf-8"))
    return {"output": args.output, "counters": counters, "stats": stats}


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    summary = run()
    print(json.dumps(summary["counters"], indent=2))
