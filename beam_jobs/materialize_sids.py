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
items go through the model (the cold-start path for new items). The table is rewritten whole, with
the known items joined back by id. With `--append` (the daily step's mode) the known ids are a side
input that filters the corpus before the model, and the new items' SIDs are added to the table as new
shards: a day's work is its new items, not the table.
"""

import json
import logging
import uuid

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference

from beam_jobs import chunk_coders
from beam_jobs.counters import job_counters
from beam_jobs.options import SHIPPING_HELP, pipeline_options
from beam_jobs.record_batches_io import WriteTFRecordBatches
from beam_jobs.sid_model_handler import Chunk, SidModelHandler
from beam_jobs.sid_stats import (SAMPLE_MARGIN, MergeCountsFn, SidChunk, SidStatistics, SmallestFingerprintsFn,
                                 bucketed_counts, local_sample)
from models import rqvae_savedmodel
from pipeline.core import config_flags, files, fingerprint, row_rules
from pipeline.core import features as fk
from pipeline.core.configs import MaterializeConfig  # noqa: F401  (re-exported beside the job)
from pipeline.core.contracts import to_json_line
from pipeline.core.cards import read_rqvae_card
from pipeline.core.layout import SidTableLayout
from pipeline.core.publish import absolute_path, published
from pipeline.data import sid_table_io

NAMESPACE = "sidrec_materialize"
REJECTED = "rejected"
chunk_coders.register(Chunk, SidChunk, PredictionResult, pa.Table)


# ------------------------------------------------------------------------------ model location

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
    """Record batches -> Chunks of valid rows, and one reject per bad row (the corpus contract's row rules)."""

    def __init__(self, dim: int, chunk_rows: int, source: str):
        self._dim = dim
        self._chunk_rows = chunk_rows
        self._source = source

    def process(self, table: pa.Table):
        for start in range(0, table.num_rows, self._chunk_rows):
            yield from self._validate(table.slice(start, self._chunk_rows))

    def _validate(self, table: pa.Table):
        Metrics.counter(NAMESPACE, "rows_read").inc(table.num_rows)
        checked = row_rules.check_corpus_rows(table, self._source, self._dim)
        for row, (field, reason) in sorted(checked.failures.items()):
            yield _reject(field, reason, checked.record(row))
        ok = checked.ok
        if ok.any():
            yield Chunk(checked.item_ids[ok], checked.first_day[ok], checked.embeddings[ok])


class SplitDuplicated(beam.DoFn):
    """Takes the rows of duplicated ids (a side input, usually tiny) out of the chunks, one by one."""

    DUPLICATED = "duplicated"

    def process(self, chunk: Chunk, duplicated: dict):
        if not duplicated:
            yield chunk
            return
        mine = np.array([i in duplicated for i in chunk.item_ids], dtype=bool)
        for row in np.flatnonzero(mine):
            first_day, digest = row_rules.duplicate_key(chunk.first_day[row], chunk.embeddings[row])
            yield beam.pvalue.TaggedOutput(self.DUPLICATED, (chunk.item_ids[row], (first_day, digest,
                                                                                  chunk.embeddings[row])))
        if not mine.all():
            yield Chunk(chunk.item_ids[~mine], chunk.first_day[~mine], chunk.embeddings[~mine])


def keep_one_per_id(kv):
    """Rows of one duplicated id -> the kept row, and the others as rejects (the one duplicate-id rule)."""
    item_id, rows = kv
    rows = list(rows)
    kept, reasons = row_rules.resolve_duplicates(item_id, [(r[0], r[1]) for r in rows])
    yield item_id, rows[kept]
    for i, reason in sorted(reasons.items()):
        first_day, _, vector = rows[i]
        yield _reject(fk.ITEM_ID, reason, {fk.ITEM_ID: item_id, fk.FIRST_DAY: first_day, fk.EMBEDDING: vector})


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


class DropKnownItems(beam.DoFn):
    """Append mode: the rows of a chunk whose id the table lacks (the ids it has are a side input)."""

    def process(self, chunk: Chunk, known: dict):
        new = np.array([i not in known for i in chunk.item_ids], dtype=bool)
        Metrics.counter(NAMESPACE, "rows_already_materialised").inc(int((~new).sum()))
        if new.all():
            yield chunk
        elif new.any():
            yield Chunk(chunk.item_ids[new], chunk.first_day[new], chunk.embeddings[new])


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
    return sid_table_io.sid_parquet_table(chunk.item_ids, chunk.sids, version)


def _examples(chunk: SidChunk, version: str):
    return sid_table_io.encode_sid_examples(chunk.item_ids, chunk.sids, version)


def _failed_inference(failure):
    chunks, exception = failure
    for chunk in chunks:
        for item_id, embedding in zip(chunk.item_ids, chunk.embeddings):
            Metrics.counter(NAMESPACE, "rows_rejected").inc()
            Metrics.counter(NAMESPACE, "rejected_inference").inc()
            yield {"field": fk.EMBEDDING, "reason": f"inference failed: {exception!r}",
                   "record": {fk.ITEM_ID: item_id, fk.EMBEDDING: embedding}}


def _materialised(result) -> SidChunk:
    chunk = result.example
    Metrics.counter(NAMESPACE, "rows_materialised").inc(chunk.size)
    return SidChunk(chunk.item_ids, np.asarray(result.inference, np.int64), chunk.embeddings)


class DropEmbeddings(beam.DoFn):
    """SidChunks with embeddings -> the same without them, and the chunk's part of the statistics sample.

    The embeddings are most of a row's bytes (8 KB at D=2048); nothing after the model needs them but
    the prefix-similarity sample, so they leave the stream as soon as the SIDs exist.
    """

    SAMPLE = "sample"

    def __init__(self, sample_size: int):
        self._sample_size = sample_size

    def process(self, chunk: SidChunk, max_fingerprint: int):
        for part in local_sample(chunk, self._sample_size, max_fingerprint):
            yield beam.pvalue.TaggedOutput(self.SAMPLE, part)
        yield SidChunk(chunk.item_ids, chunk.sids, None)


class _WriteJson(beam.DoFn):
    def __init__(self, path: str):
        self._path = path

    def process(self, report):
        with FileSystems.create(self._path) as f:
            f.write(json.dumps(report, indent=2).encode("utf-8"))


# ----------------------------------------------------------------------------------- pipeline

def _read_rows(p: beam.Pipeline, corpus: str, label: str, columns=None, chunk_rows: int = 2048):
    """The corpus as Arrow tables (Parquet: only `columns`, if given; TFRecord: parsed tf.Examples)."""
    if corpus.endswith(".parquet"):
        return p | f"Read{label}" >> beam.io.ReadFromParquetBatched(corpus, columns=columns).with_output_types(pa.Table)
    return (p | f"Read{label}" >> beam.io.ReadFromTFRecord(corpus)
            | f"Parse{label}" >> beam.ParDo(ParseExample())
            | f"Batch{label}" >> beam.BatchElements(min_batch_size=1, max_batch_size=chunk_rows)
            | f"{label}ToTables" >> beam.Map(rows_to_table).with_output_types(pa.Table))


def _present_ids(table: pa.Table) -> list[str]:
    """The non-empty ids of a batch (rows without one are rejected by the row rules, not counted)."""
    return [i for i in row_rules.string_column(table, fk.ITEM_ID) if isinstance(i, str) and i]


def build_pipeline(p: beam.Pipeline, config: MaterializeConfig, model_path: str, card: dict, staging: str) -> None:
    """Adds every step of the job to p, writing under staging.

    The embeddings stream from the reader through validation and the model without a shuffle or a
    materialised Flatten (each would serialise every embedding once more): duplicated ids are found
    on a second read of the id column alone, and only their rows leave the stream for the per-id
    rule; after the model, the embeddings are dropped but for the statistics sample, whose candidates
    (ids under the sample's fingerprint threshold) are known from the same id read.
    """
    version = card["rqvae_version"]
    num_levels, codebook_size, dim = card["num_levels"], card["codebook_size"], card["input_dim"]
    out = SidTableLayout(staging)

    def rechunk(label: str):
        return label >> beam.BatchElements(min_batch_size=1, max_batch_size=config.chunk_rows)

    # Dedupe: count ids on a light stream; only rows of duplicated ids go through the per-row rule.
    ids = _read_rows(p, config.corpus, "Ids", [fk.ITEM_ID], config.chunk_rows) | "PresentIds" >> beam.Map(_present_ids)
    max_fingerprint = ids | "SampleThreshold" >> beam.CombineGlobally(
        SmallestFingerprintsFn(int(SAMPLE_MARGIN * config.sample_size)))
    duplicated = (ids
                  | "Ids" >> beam.FlatMap(lambda batch: bucketed_counts(batch, config.buckets))
                  | "CountIds" >> beam.CombinePerKey(MergeCountsFn())
                  | "Duplicated" >> beam.FlatMap(lambda kv: ((i, c) for i, c in kv[1].items() if c > 1)))
    checked = (_read_rows(p, config.corpus, "Corpus", None, config.chunk_rows)
               | "Validate" >> beam.ParDo(ValidateToChunks(dim, config.chunk_rows, config.corpus))
               .with_output_types(Chunk).with_outputs(
                   REJECTED, main="valid"))
    # No Reshuffle: the readers split the input already (Parquet row groups, TFRecord byte ranges).
    split = checked.valid | "SplitDuplicated" >> beam.ParDo(
        SplitDuplicated(), duplicated=beam.pvalue.AsDict(duplicated)).with_output_types(Chunk).with_outputs(
        SplitDuplicated.DUPLICATED, main="unique")
    resolved = (split[SplitDuplicated.DUPLICATED]
                | "GroupDuplicates" >> beam.GroupByKey()
                | "KeepOnePerId" >> beam.FlatMap(keep_one_per_id).with_outputs(REJECTED, main="kept"))
    kept_chunks = (resolved.kept | rechunk("BatchKept")
                   | "KeptToChunks" >> beam.Map(rows_to_chunk).with_output_types(Chunk))

    # Two model applications, so the large stream never meets the small one before the model.
    inputs, known = {"Unique": split.unique, "Kept": kept_chunks}, None
    if config.append:
        known_ids = beam.pvalue.AsDict(
            _read_rows(p, FileSystems.join(SidTableLayout(config.existing_table).table, "*.parquet"), "KnownIds",
                       [fk.ITEM_ID])
            | "KnownIdKeys" >> beam.FlatMap(lambda table: ((i, True) for i in table.column(fk.ITEM_ID).to_pylist())))
        inputs = {name: chunks | f"DropKnown{name}" >> beam.ParDo(DropKnownItems(), known_ids).with_output_types(Chunk)
                  for name, chunks in inputs.items()}
    elif config.existing_table:
        unique = [split.unique, kept_chunks] | "UniqueChunks" >> beam.Flatten()
        table = (p | "ReadExistingTable" >> beam.io.ReadFromParquet(
                     FileSystems.join(SidTableLayout(config.existing_table).table, "*.parquet"))
                 | "KeyExisting" >> beam.Map(lambda r: (r[fk.ITEM_ID], (r[fk.SID], r[fk.RQVAE_VERSION]))))
        joined = ({"corpus": unique | "Explode" >> beam.FlatMap(explode), "table": table}
                  | "JoinExisting" >> beam.CoGroupByKey()
                  | "SplitKnown" >> beam.ParDo(SplitKnownItems(version)).with_outputs(
                      SplitKnownItems.KNOWN, main="new"))
        inputs = {"New": joined.new | rechunk("BatchNew")
                  | "NewToChunks" >> beam.Map(rows_to_chunk).with_output_types(Chunk)}
        known = (joined[SplitKnownItems.KNOWN] | rechunk("BatchKnown")
                 | "KnownToChunks" >> beam.Map(known_to_sid_chunk).with_output_types(SidChunk))

    drop_embeddings = DropEmbeddings(config.sample_size)
    threshold = beam.pvalue.AsSingleton(max_fingerprint)
    sid_parts, samples, failed = [], [], []
    for name, chunks in inputs.items():
        inferred, failures = (chunks | f"RunInference{name}" >> RunInference(
            SidModelHandler(model_path)).with_exception_handling())
        failed.append(failures.failed_inferences | f"FailedInference{name}" >> beam.FlatMap(_failed_inference))
        parts = (inferred | f"ToSidChunks{name}" >> beam.Map(_materialised).with_output_types(SidChunk)
                 | f"DropEmbeddings{name}" >> beam.ParDo(drop_embeddings, threshold).with_output_types(SidChunk)
                 .with_outputs(DropEmbeddings.SAMPLE, main="sids"))
        sid_parts.append(parts.sids)
        samples.append(parts[DropEmbeddings.SAMPLE])
    if known is not None:
        parts = known | "DropEmbeddingsKnown" >> beam.ParDo(drop_embeddings, threshold).with_output_types(
            SidChunk).with_outputs(
            DropEmbeddings.SAMPLE, main="sids")
        sid_parts.append(parts.sids)
        samples.append(parts[DropEmbeddings.SAMPLE])
    sid_chunks = sid_parts | "AllSidChunks" >> beam.Flatten()

    shards = {"num_shards": config.num_shards} if config.num_shards else {}
    (sid_chunks
     | "ToArrow" >> beam.Map(_parquet_table, version)
     | "WriteParquet" >> beam.io.WriteToParquetBatched(FileSystems.join(out.table, "part"), sid_table_io.SID_SCHEMA,
                                                       file_name_suffix=".parquet", **shards))
    (sid_chunks
     | "ToExamples" >> beam.Map(_examples, version)  # a chunk's records per element: Beam's cost is per element
     | "WriteTFRecord" >> WriteTFRecordBatches(FileSystems.join(out.tfrecord, "part"),
                                               file_name_suffix=".tfrecord.gz", **shards))
    ((checked[REJECTED], resolved[REJECTED], *failed)
     | "AllRejected" >> beam.Flatten()
     | "RejectedToJson" >> beam.Map(to_json_line)
     | "WriteRejected" >> beam.io.WriteToText(FileSystems.join(out.rejected, "part"),
                                              file_name_suffix=".jsonl", num_shards=1))
    (sid_chunks
     | "Statistics" >> SidStatistics(samples | "AllSamples" >> beam.Flatten(), num_levels, codebook_size,
                                     config.sample_size, config.buckets, allow_empty=config.append)
     | "AddVersion" >> beam.Map(lambda r: dict(r, rqvae_version=version, model=model_path))
     | "WriteStats" >> beam.ParDo(_WriteJson(out.stats)))


def table_fingerprint(config: MaterializeConfig, card: dict) -> fingerprint.Fingerprint:
    """What the SID table is made from: the RQ-VAE version (weights fingerprint inside) and the corpus bytes.

    Transform outputs of SID representations record it, so a new table rebuilds them.
    """
    from pipeline.core.tf_env import tf

    existing = fingerprint.read(config.existing_table) if config.existing_table else None
    return fingerprint.Fingerprint({
        "stage": "sids", "rqvae_version": card["rqvae_version"],
        "corpus": fingerprint.digest_files(tf.io.gfile.glob(config.corpus)),
        "existing_table": existing["fingerprint"] if existing else config.existing_table})


def run(config: MaterializeConfig, beam_args=(), save_main_session: bool = False) -> dict:
    """Runs the job; `beam_args` go to PipelineOptions (--runner, --project, ...).

    Returns:
      {"output", "counters", "stats"} once the outputs are published.
    """
    # Default: Beam's in-memory DirectRunner, measured faster here than multi_processing on 2 cores
    # (benchmarks/); multi_threading corrupted this pipeline's elements under Beam 2.77.
    options = pipeline_options(beam_args, save_main_session=save_main_session)
    model_path = absolute_path(rqvae_savedmodel.latest(config.model))  # stats.json records it; transforms read it
    card = read_rqvae_card(model_path)
    logging.info("materialising SIDs of %s with RQ-VAE %s into %s", config.corpus, card["rqvae_version"],
                 config.output)
    if config.append:
        return _append(config, options, model_path, card)
    with published(config.output) as staging:
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, config, model_path, card, staging)
        table_fingerprint(config, card).write(staging)
    counters = job_counters(p.result, NAMESPACE)
    with FileSystems.open(SidTableLayout(config.output).stats) as f:
        stats = json.loads(f.read().decode("utf-8"))
    return {"output": config.output, "counters": counters, "stats": stats}


def _has_rows(path: str) -> bool:
    """Whether a shard the job wrote holds a row (Parquet by its footer, TFRecord by its first record)."""
    if path.endswith(".parquet"):
        return files.read_parquet(path).num_rows > 0
    if ".tfrecord" in path:
        from pipeline.data import log_io

        return next(log_io.read_tfrecord_batches(path, 1), None) is not None
    return files.size(path) > 0


def _append(config: MaterializeConfig, options, model_path: str, card: dict) -> dict:
    """Append mode: the new items' SIDs are written beside the table, then moved into it shard by shard.

    Every moved shard holds complete rows of items the table lacked, so a run stopped between two moves
    leaves a table whose every SID is right, and a rerun adds only the items still missing.
    """
    table = SidTableLayout(config.output)
    with FileSystems.open(table.stats) as f:
        made_by = json.loads(f.read().decode("utf-8"))["rqvae_version"]
    if made_by != card["rqvae_version"]:
        raise ValueError(f"--existing_table holds SIDs of RQ-VAE {made_by}, but --model is {card['rqvae_version']}: "
                         "re-materialise the whole corpus")
    token = uuid.uuid4().hex[:12]
    staging = files.join(files.dirname(config.output.rstrip("/")), f".append-{token}")
    try:
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, config, model_path, card, staging)
        added = SidTableLayout(staging)
        for source_dir, target_dir in ((added.table, table.table), (added.tfrecord, table.tfrecord),
                                       (added.rejected, table.rejected)):
            files.makedirs(target_dir)
            for path in files.files_in(source_dir):
                if _has_rows(path):  # the sinks write a shard even with nothing to write; readers refuse it
                    files.rename(path, files.join(target_dir, f"append-{token}-{files.basename(path)}"))
        files.makedirs(files.dirname(table.appended_stats(token)))
        files.rename(added.stats, table.appended_stats(token))
        table_fingerprint(config, card).write(config.output)
    finally:
        if files.exists(staging):
            files.remove(staging)
    counters = job_counters(p.result, NAMESPACE)
    with FileSystems.open(table.appended_stats(token)) as f:
        stats = json.loads(f.read().decode("utf-8"))
    return {"output": config.output, "counters": counters, "stats": stats, "appended": True}


def describe(summary: dict) -> str:
    """The job's counters and the table's headline statistics."""
    stats = summary["stats"]
    counters = "counters: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary["counters"].items())) + "\n"
    if not stats["items"]:
        return counters + f"SID table ({stats['rqvae_version']}): {summary['output']}; nothing added: every item has a SID"
    utilisation = " ".join(f"{level['utilisation']:.0%}" for level in stats["levels"])
    added = f"{stats['items']:,} items added; among them " if summary.get("appended") else ""
    return (counters + f"SID table ({stats['rqvae_version']}): {summary['output']}; {added}unique-SID ratio "
            f"{stats['unique_sid_ratio']:.4f}, utilisation per level {utilisation}")


def main(argv=None) -> dict:
    """`python -m beam_jobs.materialize_sids --corpus ... --model ... --output ... [Beam flags]`."""
    return run(*config_flags.parse_known(MaterializeConfig, argv, __doc__, SHIPPING_HELP))


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    print(json.dumps(main()["counters"], indent=2))
