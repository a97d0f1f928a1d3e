"""Beam steps that join item features (SID, first day, content embedding) onto batches of log rows.

Two ways, one result (the same `join_batch` builds every output batch, so their outputs are the same
examples):
  - in memory (`JoinItemFeatures`): every worker process loads the item tables once (an `ItemIndex`,
    shared by all its DoFns through `apache_beam.utils.shared`) from their files; fastest, and fine
    up to tens of millions of items. (Passed as DoFn arguments instead, the tables would be pickled
    and bz2-compressed into the pipeline once per day: most of the dense transform's time.)
  - keyed join (`JoinItemFeaturesByKey`): no worker holds a whole table. Each batch asks for its
    distinct items; a CoGroupByKey by item id meets the requests with the SID table and corpus rows
    (read from their Parquet shards by Beam), and a second CoGroupByKey by batch brings each batch
    exactly the items it needs.
Items without a SID get codes of -1 (the OOV row) and are counted per role. Each path counts the
batches it joined under its own name (JOINED_IN_MEMORY, JOINED_BY_KEY), so a job's counters say which ran.
"""

import hashlib

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from pipeline.core import arrow_lists, row_rules
from pipeline.core import features as fk
from pipeline.core.representation import RepresentationConfig
from pipeline.sid.item_join import ItemIndex, join_item_features

NAMESPACE = "sidrec_transform"
# Counter names of items without a SID, per role (the names the job has always reported).
_MISSING_COUNTERS = {fk.WATCH_SID: "watch_without_sid", fk.CANDIDATE_SID: "candidate_without_sid",
                     fk.HISTORY_SIDS: "history_without_sid"}
JOINED_IN_MEMORY, JOINED_BY_KEY = "batches_joined_in_memory", "batches_joined_by_key"


def ids(batch: pa.RecordBatch, key: str) -> list[str]:
    return [v.decode("utf-8") for v in scalars(batch, key)]


def scalars(batch: pa.RecordBatch, key: str) -> np.ndarray:
    """One value per row of a batch that passed the row rules (so exactly one is there)."""
    values, _, _ = arrow_lists.list_column(batch.column(key))
    return values


def history_ids(batch: pa.RecordBatch) -> tuple[list[str], np.ndarray]:
    """Every row's history item ids, one row after another, and the history length per row."""
    values, lengths, _ = arrow_lists.list_column(batch.column(fk.HISTORY_ITEM_IDS))
    return [v.decode("utf-8") for v in values], lengths


def join_batch(config: RepresentationConfig, batch: pa.RecordBatch, index: ItemIndex,
               namespace: str = NAMESPACE) -> pa.RecordBatch:
    """Valid log rows -> one Arrow RecordBatch with SIDs, the candidate's first day (and embeddings).

    The id, label and day columns go through as Arrow columns (never decoded to Python strings), and
    the item features are looked up a column at a time (ItemIndex). Items without a SID are counted
    per role in the `namespace` counters.
    """
    n = batch.num_rows
    watch, candidate = (batch.column(key).flatten() for key in (fk.WATCH_ITEM_ID, fk.CANDIDATE_ITEM_ID))
    history_column = batch.column(fk.HISTORY_ITEM_IDS)
    history_lengths = history_column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    ids_type = pa.large_list(pa.large_binary())
    columns = {key: batch.column(key).cast(ids_type)
               for key in (fk.WATCH_ITEM_ID, fk.CANDIDATE_ITEM_ID, fk.HISTORY_ITEM_IDS)}
    columns[fk.CLICK] = arrow_lists.scalar_list_array(scalars(batch, fk.CLICK), pa.int64())
    columns[fk.ENGAGEMENT] = arrow_lists.scalar_list_array(scalars(batch, fk.ENGAGEMENT), pa.float32())
    columns[fk.DAY] = arrow_lists.scalar_list_array(scalars(batch, fk.DAY), pa.int64())
    first_days, _ = index.lookup("first_day", index.rows(candidate))
    columns[fk.CANDIDATE_FIRST_DAY] = arrow_lists.scalar_list_array(first_days, pa.int64())
    columns[fk.USER_ID] = batch.column(fk.USER_ID).cast(ids_type)
    joined = join_item_features(config, index, watch, candidate, history_column.flatten(), history_lengths)
    types = {fk.WATCH_EMBEDDING: pa.float32(), fk.CANDIDATE_EMBEDDING: pa.float32()}
    for key, (values, lengths) in joined.columns.items():
        columns[key] = arrow_lists.list_array(values, lengths, types.get(key, pa.int64()))
        Metrics.counter(namespace, _MISSING_COUNTERS.get(key, f"{key}_missing")).inc(joined.missing[key])
    Metrics.counter(namespace, "rows_joined").inc(n)
    return pa.RecordBatch.from_arrays(list(columns.values()), list(columns.keys()))


class ItemTablesFromFiles:
    """Loads the ItemIndex of a SID table directory and a corpus file (called on the worker)."""

    def __init__(self, sids_dir: str, corpus_path: str, config: RepresentationConfig):
        self._sids_dir, self._corpus_path, self._config = sids_dir, corpus_path, config

    def __call__(self) -> ItemIndex:
        from pipeline.core.layout import SidTableLayout
        from pipeline.data import corpus_io, sid_table_io

        config = self._config
        corpus = corpus_io.read_corpus(self._corpus_path)
        sids = sid_table_io.read_sid_table(SidTableLayout(self._sids_dir).table).lookup() if config.has_sids else {}
        return ItemIndex(config, sids, dict(zip(corpus.item_ids, corpus.embeddings)) if config.is_dense else {},
                         {i: int(d) for i, d in zip(corpus.item_ids, corpus.first_day)})

    def tag(self) -> str:
        return f"{self._sids_dir}|{self._corpus_path}|{self._config.has_sids}|{self._config.is_dense}|" \
               f"{self._config.num_levels}|{self._config.embedding_dim}"


class JoinItemFeatures(beam.DoFn):
    """(day, valid log rows) -> joined RecordBatch, from item tables each worker process loads once.

    Args:
      config: the representation.
      load_tables: a picklable callable returning an ItemIndex (ItemTablesFromFiles in the job), with
        a `tag()` naming what it loads.
      shared: one `apache_beam.utils.shared.Shared` for every JoinItemFeatures of a pipeline, so the
        DoFns of all days share one copy of the tables per process.
    """

    def __init__(self, config: RepresentationConfig, load_tables, shared, namespace: str = NAMESPACE):
        self._config, self._load_tables, self._shared, self._namespace = config, load_tables, shared, namespace

    def setup(self):
        self._tables = self._shared.acquire(self._load_tables, tag=self._load_tables.tag())

    def process(self, element):
        _, batch = element
        Metrics.counter(self._namespace, JOINED_IN_MEMORY).inc()
        yield join_batch(self._config, batch, self._tables, self._namespace)


# ------------------------------------------------------------------------------------ keyed join

def batch_key(element) -> tuple[int, str]:
    """A key for one batch of log rows: its day and a digest of its rows.

    Batches with identical rows share a key; the join handles every batch of a key alike, so a shared
    key only groups work, it never mixes features up.
    """
    day, batch = element
    digest = hashlib.sha1()
    for key in (fk.USER_ID, fk.WATCH_ITEM_ID, fk.CANDIDATE_ITEM_ID, fk.HISTORY_ITEM_IDS):
        for buffer in batch.column(key).flatten().buffers():
            if buffer is not None:
                digest.update(buffer)
    return int(day), digest.hexdigest()


def _requests(keyed):
    """(batch key, (day, batch)) -> (item id, batch key) for each distinct item the batch names."""
    key, (_, batch) = keyed
    items = set(ids(batch, fk.WATCH_ITEM_ID)) | set(ids(batch, fk.CANDIDATE_ITEM_ID)) | set(history_ids(batch)[0])
    for item_id in sorted(items):
        yield item_id, key


class SidRows(beam.DoFn):
    """SID table Parquet batches -> (item_id, int64 [L] codes)."""

    def process(self, table: pa.Table):
        values, lengths, _ = arrow_lists.list_column(table.column(fk.SID))
        codes = values.astype(np.int64).reshape(len(lengths), -1) if len(lengths) else values
        yield from zip(row_rules.string_column(table, fk.ITEM_ID), codes)


class CorpusRows(beam.DoFn):
    """Corpus Parquet batches -> (item_id, (first_day, duplicate digest, embedding or None)) of valid rows.

    The corpus contract's row rules leave out the rows the launcher's reader rejected too; the
    duplicate-id rule is applied per item after the grouping.
    """

    def __init__(self, source: str, embedding_dim: int, with_embeddings: bool):
        self._source, self._dim, self._with_embeddings = source, embedding_dim, with_embeddings

    def process(self, table: pa.Table):
        checked = row_rules.check_corpus_rows(table, self._source, self._dim)
        for row in np.flatnonzero(checked.ok):
            first_day, digest = row_rules.duplicate_key(checked.first_day[row], checked.embeddings[row])
            yield checked.item_ids[row], (first_day, digest, checked.embeddings[row] if self._with_embeddings else None)


def _to_batches(grouped):
    """(item id, {requests, sid, corpus}) -> (batch key, (item id, sid, first day, embedding)) per request."""
    item_id, parts = grouped
    requests = list(parts["requests"])
    if not requests:
        return
    sid = next(iter(parts["sid"]), None)
    rows = list(parts["corpus"])
    first_day, embedding = None, None
    if rows:
        kept, _ = row_rules.resolve_duplicates(item_id, [(r[0], r[1]) for r in rows])
        first_day, _, embedding = rows[kept]
    for key in requests:
        yield key, (item_id, sid, first_day, embedding)


class JoinGroupedBatch(beam.DoFn):
    """(batch key, {batch: [(day, batch)], items: [features]}) -> (day, joined RecordBatch)."""

    def __init__(self, config: RepresentationConfig):
        self._config = config

    def process(self, grouped):
        _, parts = grouped
        sids, first_days, embeddings = {}, {}, {}
        for item_id, sid, first_day, embedding in parts["items"]:
            if sid is not None:
                sids[item_id] = sid
            if first_day is not None:
                first_days[item_id] = first_day
            if embedding is not None:
                embeddings[item_id] = embedding
        index = ItemIndex(self._config, sids, embeddings, first_days)
        for day, batch in parts["batch"]:
            Metrics.counter(NAMESPACE, JOINED_BY_KEY).inc()
            yield day, join_batch(self._config, batch, index)


@beam.ptransform_fn
def ItemFeatureRows(pcoll, sid_pattern: str, corpus_path: str, config: RepresentationConfig):  # noqa: N802
    """The keyed item tables, read by Beam: {"sid": (item_id, codes), "corpus": (item_id, row)}."""
    p = pcoll.pipeline
    sid_rows = (p | "ReadSidTable" >> beam.io.ReadFromParquetBatched(sid_pattern)
                | "SidRows" >> beam.ParDo(SidRows())) if config.has_sids else p | "NoSids" >> beam.Create([])
    corpus_rows = (p | "ReadCorpus" >> beam.io.ReadFromParquetBatched(corpus_path)
                   | "CorpusRows" >> beam.ParDo(CorpusRows(corpus_path, config.embedding_dim, config.is_dense)))
    return {"sid": sid_rows, "corpus": corpus_rows}


@beam.ptransform_fn
def JoinItemFeaturesByKey(batches, item_rows: dict, config: RepresentationConfig):  # noqa: N802 (Beam composite)
    """(day, valid log rows) of any days -> (day, joined RecordBatch), by two keyed joins (no table held whole).

    Join every day at once: the item tables then go through the shuffle once, not once a day.
    """
    keyed = batches | "KeyBatches" >> beam.Map(lambda element: (batch_key(element), element))
    per_batch = ({"requests": keyed | "ItemsPerBatch" >> beam.FlatMap(_requests), **item_rows}
                 | "ByItem" >> beam.CoGroupByKey()
                 | "ItemsToBatches" >> beam.FlatMap(_to_batches))
    return ({"batch": keyed, "items": per_batch}
            | "ByBatch" >> beam.CoGroupByKey()
            | "Join" >> beam.ParDo(JoinGroupedBatch(config)))
