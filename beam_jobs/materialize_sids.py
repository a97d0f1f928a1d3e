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
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_jobs import publish
from beam_jobs.counters import job_counters
from beam_jobs.sid_model_handler import Chunk, SidModelHandler
from beam_jobs.sid_stats import MergeCountsFn, SidChunk, SidStatistics, bucketed_counts
from models.rqvae_savedmodel import METADATA_PATH
from pipeline.core import contracts
from pipeline.data import data_io
from pipeline.core import fingerprint
from pipeline.core import features as fk
from pipeline.sid import sid_quality

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
        from pipeline.core.tf_env import tf

        features = tf.train.Example.FromString(record).features.feature
        row = {fk.ITEM_ID: None, fk.EMBEDDING: None, fk.FIRST_DAY: None}
        if fk.ITEM_ID in features and features[fk.ITEM_ID].bytes_list.value:
            row[fk.ITEM_ID] = features[fk.ITEM_ID].bytes_list.value[0].decode("utf-8")
        if fk.EMBEDDING in features:
            row[fk.EMBEDDING] = list(features[fk.EMBEDDING].float_list.value)
        if fk.FIRST_DAY in features and features[fk.FIRST_DAY].int64_list.value:
            row[fk.FIRST_DAY] = int(features[fk.FIRST_DAY].int64_list.value[0])
        yield row


def rows_to_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)


class ValidateToChunks(beam.DoFn):
    """Record batches -> Chunks of valid rows (vectorised checks), and one reject per bad row."""

    def __init__(self, dim: int, chunk_rows: int):
        self._dim = dim
        self._chunk_rows = chunk_rows

    def process(self, table: pa.Table):
        for start in range(0, table.num_rows, self._chunk_rows):
            yield from self._validate(table.slice(start, self._chunk_rows))

    def _validate(self, table: pa.Table):
        n, dim, names = table.num_rows, self._dim, table.column_names
        Metrics.counter(NAMESPACE, "rows_read").inc(n)
        ids = np.array(table.column(fk.ITEM_ID).to_pylist() if fk.ITEM_ID in names else [None] * n, dtype=object)
        days = table.column(fk.FIRST_DAY).to_pylist() if fk.FIRST_DAY in names else [None] * n
        if fk.EMBEDDING in names:
            values, lengths, missing = contracts.list_column(table.column(fk.EMBEDDING))
            values = values.astype(np.float32, copy=False)
        else:
            values, lengths, missing = np.zeros(0, np.float32), np.zeros(n, np.int64), np.ones(n, bool)
        offsets = np.cumsum(lengths) - lengths
        right_len = ~missing & (lengths == dim)
        embeddings = np.zeros((n, dim), np.float32)
        embeddings[right_len] = values[offsets[right_len, None] + np.arange(dim)]
        first_day = np.array([-1 if d is None else d for d in days], dtype=np.int64)
        ok, failures = contracts.first_failure([
            (fk.ITEM_ID, np.array([not isinstance(i, str) or not i for i in ids]),
             lambda r: "missing or empty item id"),
            (fk.EMBEDDING, missing, lambda r: "missing embedding"),
            (fk.EMBEDDING, ~right_len, lambda r: f"wrong dimension: {lengths[r]} values, expected {dim}"),
            (fk.EMBEDDING, ~np.isfinite(embeddings).all(1), lambda r: "non-finite value (NaN or inf) in the embedding"),
            (fk.FIRST_DAY, first_day < 0, lambda r: f"first_day {days[r]}, expected an int >= 0"),
        ], n)
        for row, (field, reason) in sorted(failures.items()):
            yield _reject(field, reason, {fk.ITEM_ID: ids[row], fk.FIRST_DAY: days[row],
                                          fk.EMBEDDING: values[offsets[row]:offsets[row] + lengths[row]].tolist()})
        if ok.any():
            yield Chunk(ids[ok], first_day[ok], embeddings[ok])


class SplitDuplicated(beam.DoFn):
    """Takes the rows of duplicated ids (a side input, usually tiny) out of the chunks, one by one."""

    DUPLICATED = "duplicated"

    def process(self, chunk: Chunk, duplicated: dict):
        if not duplicated:
            yield chunk
            return
        mine = np.array([i in duplicated for i in chunk.item_ids], dtype=bool)
        for row in np.flatnonzero(mine):
            digest = hashlib.sha1(chunk.embeddings[row].tobytes()).hexdigest()  # as pipeline.core.contracts
            yield beam.pvalue.TaggedOutput(self.DUPLICATED, (
                chunk.item_ids[row], (int(chunk.first_day[row]), digest, chunk.embeddings[row])))
        if not mine.all():
            yield Chunk(chunk.item_ids[~mine], chunk.first_day[~mine], chunk.embeddings[~mine])


def keep_one_per_id(kv):
    """Duplicated ids: keep the earliest first_day, then the smallest embedding digest (any order)."""
    item_id, rows = kv
    rows = sorted(rows, key=lambda r: (r[0], r[1]))
    kept = rows[0]
    yield item_id, kept
    for first_day, digest, vector in rows[1:]:
        if (first_day, digest) == kept[:2]:
            reason = "duplicate item id: an identical row was kept"
        else:
            reason = (f"duplicate item id: kept the row with first_day {kept[0]} and embedding digest "
                      f"{kept[1][:12]} (earliest first_day, then smallest digest)")
        yield _reject(fk.ITEM_ID, reason, {fk.ITEM_ID: item_id, fk.FIRST_DAY: first_day,
                                           fk.EMBEDDING: vector.tolist()})


def rows_to_chunk(rows) -> Chunk:
    """[(item_id, (first_day, digest, embedding))] -> Chunk."""
    return Chunk(np.array([r[0] for r in rows], dtype=object), np.array([r[1][0] for r in rows], np.int64),
                 np.stack([r[1][2] for r in rows]))


def explode(chunk: Chunk):
    """Chunk -> per-row (item_id, (first_day, digest, embedding)), the shape rows_to_chunk takes back.

    The digest only matters for duplicates, which are resolved before this point, so it is left empty.
    """
    for item_id, first_day, embedding in zip(*chunk):
        yield item_id, (int(first_day), "", embedding)


class SplitKnownItems(beam.DoFn):
    """Incremental mode: items already in the table keep their SID; the rest go to the model."""

    KNOWN = "known"

    def __init__(self, version: str):
        self._version = version

    def process(self, kv):
        item_id, grouped = kv
        corpus_rows, existing = list(grouped["corpus"]), list(grouped["table"])
        if existing:
            sid, version = existing[0]
            if version != self._version:
                raise ValueError(f"--existing_table holds SIDs of RQ-VAE {version} (item {item_id}), "
                                 f"but --model is {self._version}: re-materialise the whole corpus")
            Metrics.counter(NAMESPACE, "rows_already_materialised").inc()
            embedding = corpus_rows[0][2] if corpus_rows else None
            yield beam.pvalue.TaggedOutput(self.KNOWN, (item_id, np.asarray(sid, np.int64), embedding))
        elif corpus_rows:
            yield item_id, corpus_rows[0]


def known_to_sid_chunk(rows) -> SidChunk:
    """[(item_id, sid, embedding or None)] -> SidChunk (embeddings None if any row lacks one)."""
    embeddings = [r[2] for r in rows]
    return SidChunk(np.array([r[0] for r in rows], dtype=object), np.stack([r[1] for r in rows]),
                    None if any(e is None for e in embeddings) else np.stack(embeddings))


# ------------------------------------------------------------------------------------ writing

def _parquet_table(chunk: SidChunk, version: str) -> pa.Table:
    return pa.table({fk.ITEM_ID: pa.array(chunk.item_ids.astype(str), pa.string()),
                     fk.SID: pa.array(list(chunk.sids), pa.list_(pa.int64())),
                     fk.RQVAE_VERSION: pa.array([version] * len(chunk.item_ids), pa.string())},
                    schema=SID_SCHEMA)


def _examples(chunk: SidChunk, version: str):
    return data_io.encode_sid_examples(chunk.item_ids, chunk.sids, version)


def _json_line(rejection: dict) -> str:
    return json.dumps(rejection, default=lambda v: v.tolist() if isinstance(v, np.ndarray) else repr(v))


def _failed_inference(failure):
    chunks, exception = failure
    for chunk in chunks:
        for item_id, embedding in zip(chunk.item_ids, chunk.embeddings):
            Metrics.counter(NAMESPACE, "rows_rejected").inc()
            Metrics.counter(NAMESPACE, "rejected_inference").inc()
            yield {"field": fk.EMBEDDING, "reason": f"inference failed: {exception!r}",
                   "record": {fk.ITEM_ID: item_id, fk.EMBEDDING: embedding.tolist()}}


def _materialised(result) -> SidChunk:
    chunk = result.example
    Metrics.counter(NAMESPACE, "rows_materialised").inc(chunk.size)
    return SidChunk(chunk.item_ids, np.asarray(result.inference, np.int64), chunk.embeddings)


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
    rechunk = beam.BatchElements(min_batch_size=1, max_batch_size=args.chunk_rows)

    if args.corpus.endswith(".parquet"):
        tables = p | "ReadCorpus" >> beam.io.ReadFromParquetBatched(args.corpus)
    else:
        tables = (p | "ReadCorpus" >> beam.io.ReadFromTFRecord(args.corpus)
                  | "ParseExamples" >> beam.ParDo(ParseExample())
                  | "BatchRows" >> beam.BatchElements(min_batch_size=1, max_batch_size=args.chunk_rows)
                  | "ToTables" >> beam.Map(rows_to_table))
    checked = (tables
               | "Validate" >> beam.ParDo(ValidateToChunks(dim, args.chunk_rows)).with_outputs(REJECTED, main="valid")
               )
    chunks = checked.valid | "Spread" >> beam.Reshuffle()

    # Dedupe: count ids on a light stream; only rows of duplicated ids go through the per-row rule.
    duplicated = (chunks
                  | "Ids" >> beam.FlatMap(lambda c: bucketed_counts(c.item_ids, args.buckets))
                  | "CountIds" >> beam.CombinePerKey(MergeCountsFn())
                  | "Duplicated" >> beam.FlatMap(lambda kv: ((i, c) for i, c in kv[1].items() if c > 1)))
    split = chunks | "SplitDuplicated" >> beam.ParDo(
        SplitDuplicated(), duplicated=beam.pvalue.AsDict(duplicated)).with_outputs(
        SplitDuplicated.DUPLICATED, main="unique")
    resolved = (split[SplitDuplicated.DUPLICATED]
                | "GroupDuplicates" >> beam.GroupByKey()
                | "KeepOnePerId" >> beam.FlatMap(keep_one_per_id).with_outputs(REJECTED, main="kept"))
    kept_chunks = resolved.kept | "BatchKept" >> rechunk | "KeptToChunks" >> beam.Map(rows_to_chunk)
    unique = (split.unique, kept_chunks) | "UniqueChunks" >> beam.Flatten()

    to_infer, known = unique, None
    if args.existing_table:
        table = (p | "ReadExistingTable" >> beam.io.ReadFromParquet(
                     FileSystems.join(args.existing_table, TABLE_DIR, "*.parquet"))
                 | "KeyExisting" >> beam.Map(lambda r: (r[fk.ITEM_ID], (r[fk.SID], r[fk.RQVAE_VERSION]))))
        joined = ({"corpus": unique | "Explode" >> beam.FlatMap(explode), "table": table}
                  | "JoinExisting" >> beam.CoGroupByKey()
                  | "SplitKnown" >> beam.ParDo(SplitKnownItems(version)).with_outputs(
                      SplitKnownItems.KNOWN, main="new"))
        to_infer = (joined.new | "BatchNew" >> beam.BatchElements(min_batch_size=1, max_batch_size=args.chunk_rows)
                    | "NewToChunks" >> beam.Map(rows_to_chunk))
        known = (joined[SplitKnownItems.KNOWN]
                 | "BatchKnown" >> beam.BatchElements(min_batch_size=1, max_batch_size=args.chunk_rows)
                 | "KnownToChunks" >> beam.Map(known_to_sid_chunk))

    inferred, failures = (to_infer
                          | "RunInference" >> RunInference(SidModelHandler(model_path)).with_exception_handling())
    new_chunks = inferred | "ToSidChunks" >> beam.Map(_materialised)
    sid_chunks = (new_chunks, known) | "AllSidChunks" >> beam.Flatten() if known is not None else new_chunks

    shards = {"num_shards": args.num_shards} if args.num_shards else {}
    (sid_chunks
     | "ToArrow" >> beam.Map(_parquet_table, version)
     | "WriteParquet" >> beam.io.WriteToParquetBatched(FileSystems.join(staging, TABLE_DIR, "part"), SID_SCHEMA,
                                                       file_name_suffix=".parquet", **shards))
    (sid_chunks
     | "ToExamples" >> beam.FlatMap(_examples, version)
     | "WriteTFRecord" >> beam.io.WriteToTFRecord(FileSystems.join(staging, TFRECORD_DIR, "part"),
                                                  file_name_suffix=".tfrecord.gz", **shards))
    failed = failures.failed_inferences | "FailedInference" >> beam.FlatMap(_failed_inference)
    ((checked[REJECTED], resolved[REJECTED], failed)
     | "AllRejected" >> beam.Flatten()
     | "RejectedToJson" >> beam.Map(_json_line)
     | "WriteRejected" >> beam.io.WriteToText(FileSystems.join(staging, REJECTED_DIR, "part"),
                                              file_name_suffix=".jsonl", num_shards=1))
    (sid_chunks
     | "Statistics" >> SidStatistics(num_levels, codebook_size, args.sample_size, args.buckets)
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
    parser.add_argument("--buckets", type=int, default=64,
                        help="hash buckets for id and prefix counting: one worker holds about "
                             "items x L / buckets keys (raise it for corpora of 100M+ items)")
    parser.add_argument("--chunk_rows", type=int, default=2048,
                        help="rows per unit of work (validation, inference, writing)")
    return parser.parse_known_args(argv)


def table_fingerprint(args, card: dict) -> fingerprint.Fingerprint:
    """What the SID table is made from: the RQ-VAE version (weights fingerprint inside) and the corpus bytes.

    Transform outputs of SID representations record it, so a new table rebuilds them.
    """
    from pipeline.core.tf_env import tf

    existing = fingerprint.read(args.existing_table) if args.existing_table else None
    return fingerprint.Fingerprint({
        "stage": "sids", "rqvae_version": card["rqvae_version"],
        "corpus": fingerprint.digest_files(tf.io.gfile.glob(args.corpus)),
        "existing_table": existing["fingerprint"] if existing else args.existing_table})


def run(argv=None, save_main_session: bool = False) -> dict:
    """Runs the job; unknown flags go to PipelineOptions (--runner, --project, ...).

    Returns:
      {"output", "counters", "stats"} once the outputs are published.
    """
    args, beam_args = _parse(argv)
    options = PipelineOptions(beam_args, save_main_session=save_main_session)
    if not options.view_as(StandardOptions).runner:
        # Beam's in-memory DirectRunner: measured faster here than multi_processing on 2 cores
        # (benchmarks/); multi_threading corrupted this pipeline's elements under Beam 2.77.
        options.view_as(StandardOptions).runner = "DirectRunner"
    model_path = resolve_model(args.model)
    card = read_model_card(model_path)
    staging = publish.staging_dir(args.output)
    logging.info("materialising SIDs of %s with RQ-VAE %s into %s", args.corpus, card["rqvae_version"], args.output)
    try:
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, args, model_path, card, staging)
        result = p.result
        table_fingerprint(args, card).write(staging)
        publish.publish(staging, args.output)
    except BaseException:
        publish.discard(staging)
        raise
    counters = job_counters(result, NAMESPACE)
    with FileSystems.open(FileSystems.join(args.output, STATS_FILE)) as f:
        stats = json.loads(f.read().decode("utf-8"))
    return {"output": args.output, "counters": counters, "stats": stats}


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    summary = run()
    print(json.dumps(summary["counters"], indent=2))
