"""Beam job (`sidrec import`): a flat interactions table and an item table into the corpus and log contracts.

  sidrec import --run_dir runs/mine --interactions 'exports/events-*.csv' \\
      --columns user=uid,item=vid,time=ts,click=clicked --items items.parquet --day_mode calendar

Two pipelines over the same input (pipeline.data.interactions states every rule):
  1. parse and check every row (named by file and row when it cannot be used, written aside to
     DATA/rejects/), and count what the day rule needs (rows; first and last calendar day);
  2. give each row its day, group the rows by user and build each impression (watch item, history),
     and write each day as --shards_per_day TFRecord files (rows of a user stay in one shard).
The launcher then writes the corpus (first_day: the item table's column, else the day of the item's
first interaction) and reads the logs back, one day at a time, through the contract's row rules to
write DATA/summary.json. `sidrec movielens` is this job with the MovieLens files' preset.
"""

import bisect
import csv
import dataclasses
import io
import json
import logging
import zlib

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs.counters import job_counters
from beam_jobs.options import SHIPPING_HELP, pipeline_options
from pipeline.core import config_flags, contracts, files
from pipeline.core.layout import DataLayout
from pipeline.core.publish import published
from pipeline.core.records import Corpus, Impressions
from pipeline.data import corpus_io, log_io, log_summary
from pipeline.data import interactions as rules
from pipeline.data.interactions import FORMATS, ImportConfig  # noqa: F401  (re-exported beside the job)

NAMESPACE = "sidrec_import"


def _format(path: str, given: str) -> str:
    if given != "auto":
        return given
    name = path.lower().removesuffix(".gz")
    for suffix, kind in ((".parquet", "parquet"), (".jsonl", "jsonl"), (".json", "jsonl"), (".csv", "csv"),
                         (".tsv", "csv"), (".txt", "csv")):
        if name.endswith(suffix):
            return kind
    raise contracts.ContractError(f"{path}: cannot tell the format from the name; give --format csv|parquet|jsonl")


def _typed(text: str):
    """A CSV cell as the value it spells: int, float, or text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class ReadRows(beam.DoFn):
    """A file -> (file, row number, {column: value}) for each row (one file read whole by one worker)."""

    def __init__(self, config: ImportConfig):
        self._config = config

    def process(self, path):
        kind = _format(path, self._config.format)
        if kind == "parquet":
            table = files.read_parquet(path)
            for row, record in enumerate(table.to_pylist()):
                yield path, row, record
        elif kind == "jsonl":
            for row, line in enumerate(files.read_text(path).splitlines()):
                if line.strip():
                    try:
                        yield path, row, json.loads(line)
                    except json.JSONDecodeError as e:
                        yield path, row, {"__error__": f"not a JSON object ({e.msg})", "__line__": line}
        else:
            delimiter = "\t" if self._config.delimiter in ("\\t", "tab") else self._config.delimiter
            reader = csv.reader(io.StringIO(files.read_text(path)), delimiter=delimiter)
            names = next(reader, []) if self._config.header else [c.strip() for c in self._config.csv_columns.split(",")]
            if not names or names == [""]:
                raise contracts.ContractError(f"{path}: CSV without a header: give --csv_columns")
            first = 1 if self._config.header else 0
            for row, cells in enumerate(reader, first):
                if cells:
                    yield path, row, dict(zip(names, (_typed(c) for c in cells)))


class ParseRows(beam.DoFn):
    """(file, row, record) -> an Interaction without its day (step 0); rows that cannot be used aside."""

    REJECTED = "rejected"

    def __init__(self, config: ImportConfig):
        self._config, self._mapping = config, rules.parse_columns(config.columns)

    def _reject(self, path, row, field, reason, record):
        Metrics.counter(NAMESPACE, "rows_rejected").inc()
        Metrics.counter(NAMESPACE, f"rejected_{field}").inc()
        return beam.pvalue.TaggedOutput(self.REJECTED, contracts.rejection_json(
            contracts.Rejection(path, row, field, reason), {k: str(v) for k, v in record.items()}))

    def process(self, element):
        path, row, record = element
        Metrics.counter(NAMESPACE, "rows_read").inc()
        if "__error__" in record:
            yield self._reject(path, row, "row", record["__error__"], record)
            return
        m, c = self._mapping, self._config
        for role, column in m.items():
            if record.get(column) is None or record.get(column) == "":
                yield self._reject(path, row, column, f"missing (the {role} column)", record)
                return
        try:
            seconds = rules.to_seconds(record[m["time"]], c.time_format)
        except ValueError as e:
            yield self._reject(path, row, m["time"], str(e), record)
            return
        rating = record.get(m.get("rating"))
        if "rating" in m and (not isinstance(rating, (int, float)) or not np.isfinite(rating)):
            yield self._reject(path, row, m["rating"], f"expected a number, got {rating!r}", record)
            return
        if "click" in m:
            click = record[m["click"]]
            if click not in (0, 1, True, False, "0", "1"):
                yield self._reject(path, row, m["click"], f"expected 0 or 1, got {click!r}", record)
                return
            click = int(click)
        else:
            click = int(rating >= c.click_threshold)
        if "engagement" in m:
            engagement = record[m["engagement"]]
            if not isinstance(engagement, (int, float)) or not 0.0 <= engagement <= 1.0:
                yield self._reject(path, row, m["engagement"], f"expected a number in [0, 1], got {engagement!r}",
                                   record)
                return
        elif "rating" in m and c.rating_max:
            engagement = rating / c.rating_max
            if not 0.0 <= engagement <= 1.0:
                yield self._reject(path, row, m["rating"], f"rating / --rating_max must be in [0, 1], got "
                                                           f"{engagement}", record)
                return
        else:
            engagement = float(click)
        user, item = record[m["user"]], record[m["item"]]
        yield rules.Interaction(seconds, rules.sort_key(user), rules.sort_key(item),
                                       _id(user), _id(item), click, float(np.float32(engagement)), 0, path, row)


class _DayRange(beam.CombineFn):
    """Rows, and the first and last calendar day, in constant memory."""

    def create_accumulator(self):
        return 0, None, None

    def add_input(self, accumulator, day):
        rows, first, last = accumulator
        return rows + 1, day if first is None else min(first, day), day if last is None else max(last, day)

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for rows, first, last in accumulators:
            if first is not None:
                out = (out[0] + rows, first if out[1] is None else min(out[1], first),
                       last if out[2] is None else max(out[2], last))
        return out

    def extract_output(self, accumulator):
        rows, first, last = accumulator
        return {"rows": rows, "first_day": first or 0, "last_day": last or 0}


def _id(value) -> str:
    """An id as text: 7 and 7.0 are "7"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _order_key(r) -> tuple:
    return r.time, r.user_key, r.item_key, r.source, r.row


class WriteShard(beam.DoFn):
    """((day, shard), impressions) -> DATA/logs/day=NNNN/impressions-SSSSS-of-NNNNN.tfrecord.gz."""

    def __init__(self, output: str, shards: int):
        self._output, self._shards = output, shards

    def process(self, element, first_days):
        (day, shard), rows = element
        rows = sorted(rows, key=lambda r: (r[0], r[1]))  # by user, then the user's order
        impressions = Impressions(
            user_id=np.array([r[2]["user_id"] for r in rows], dtype=object),
            watch_item_id=np.array([r[2]["watch_item_id"] for r in rows], dtype=object),
            candidate_item_id=np.array([r[2]["candidate_item_id"] for r in rows], dtype=object),
            history_values=np.array([i for r in rows for i in r[2]["history_item_ids"]], dtype=object),
            history_lengths=np.array([len(r[2]["history_item_ids"]) for r in rows], np.int64),
            click=np.array([r[2]["click"] for r in rows], np.int64),
            engagement=np.array([r[2]["engagement"] for r in rows], np.float32),
            day=np.full(len(rows), day, np.int64))
        log_io.write_tfrecord(DataLayout(self._output).day_file(day, shard, self._shards),
                              log_io.encode_examples(impressions))
        Metrics.counter(NAMESPACE, f"day_{day:04d}_impressions").inc(len(rows))
        Metrics.counter(NAMESPACE, f"day_{day:04d}_cold_start").inc(
            sum(first_days.get(r[2]["candidate_item_id"]) == day for r in rows))


def _read_items(config: ImportConfig) -> tuple[Corpus, dict, list[str]]:
    """The item table as a corpus (first_day 0 until the logs say), the items' own first days if given, and
    the rejection lines of items whose embedding cannot be used (left out of the corpus)."""
    if config.items:
        roles = config.item_roles()
        table = corpus_io.read_parquet(config.items)
        missing = [c for r, c in roles.items() if c not in table.column_names]
        if missing:
            raise contracts.ContractError(f"{config.items}: missing columns {missing} (--item_columns); columns "
                                          f"present: {table.column_names}")
        ids = np.array([_id(v) for v in table.column(roles["item"]).to_pylist()], dtype=object)
        embeddings = np.array(table.column(roles["embedding"]).to_pylist(), dtype=np.float32)
        own = ({i: int(d) for i, d in zip(ids, table.column(roles["first_day"]).to_pylist())}
               if "first_day" in roles else {})
        titles = (np.array([str(t) for t in table.column(roles["title"]).to_pylist()], dtype=object)
                  if "title" in roles else None)
    else:
        ids = np.array([line.strip() for line in files.read_text(config.item_ids).splitlines() if line.strip()],
                       dtype=object)
        embeddings = files.load_npy(config.embeddings).astype(np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(ids):
            raise contracts.ContractError(f"{config.embeddings}: shape {embeddings.shape}, expected [{len(ids)}, D] "
                                          f"(one row per line of {config.item_ids})")
        own, titles = {}, None
        if config.titles:
            roles = config.title_roles()
            reader = csv.DictReader(io.StringIO(files.read_text(config.titles)))
            by_id = {_id(_typed(r[roles["item"]])): r[roles["title"]] for r in reader}
            titles = np.array([by_id.get(i, "") for i in ids], dtype=object)
    finite = np.isfinite(embeddings).all(axis=1)
    source = config.items or config.embeddings
    rejected = [contracts.rejection_json(contracts.Rejection(source, int(row), "embedding", "not finite (NaN or inf)"),
                                         {"item": str(ids[row])}) for row in np.flatnonzero(~finite)]
    corpus = Corpus(item_ids=ids[finite], embeddings=embeddings[finite], first_day=np.zeros(int(finite.sum()), np.int64),
                    titles=None if titles is None else titles[finite])
    return corpus, own, rejected


def _parsed_rows(p, paths: list[str], config: ImportConfig):
    """The files' rows, parsed: DoOutputsTuple(rows=Interaction without its day, rejected=JSON lines)."""
    return (p | "Files" >> beam.Create(paths) | "Read" >> beam.ParDo(ReadRows(config))
            | "Parse" >> beam.ParDo(ParseRows(config)).with_outputs(ParseRows.REJECTED, main="rows"))


def _dated(rows, steps: rules.Steps, first_day: int):
    """Rows with their day: by calendar day from `first_day`, or by rank in the global order."""
    if steps.mode == "calendar":
        return rows | "CalendarStep" >> beam.Map(lambda r: dataclasses.replace(
            r, step=steps.of_day(steps.local_day(r.time), first_day)))
    ordered = beam.pvalue.AsSingleton(rows | "OrderKeys" >> beam.Map(_order_key)
                                      | "AllKeys" >> beam.combiners.ToList() | "Sorted" >> beam.Map(sorted))
    return rows | "RankStep" >> beam.Map(lambda r, keys: dataclasses.replace(
        r, step=steps.of_rank(bisect.bisect_left(keys, _order_key(r)), len(keys))), ordered)


def run(config: ImportConfig, beam_args=(), log=logging.info) -> dict:
    """Runs both pipelines and writes the data directory; returns {"output", "counters", "summary"}."""
    paths = sorted(m.path for m in FileSystems.match([config.interactions])[0].metadata_list)
    if not paths:
        raise contracts.ContractError(f"{config.interactions}: no file matches")
    headless = [p for p in paths if _format(p, config.format) == "csv" and not config.header and not config.csv_columns]
    if headless:
        raise ValueError(f"{headless[0]}: CSV without a header (--header false) needs --csv_columns")
    corpus, own_first_days, rejected_items = _read_items(config)
    known = set(corpus.item_ids)
    steps = config.steps()
    options = pipeline_options(beam_args, log)
    with published(config.output) as staging:
        out = DataLayout(staging)
        # Pipeline 1: how many rows, and over which days, to check the day rule before writing anything.
        with beam.Pipeline(options=options) as p:
            rows = _parsed_rows(p, paths, config)
            _ = (rows.rows | "Days" >> beam.Map(lambda r: steps.local_day(r.time) if steps.mode == "calendar" else 0)
                 | "Range" >> beam.CombineGlobally(_DayRange())
                 | "Stats" >> beam.Map(json.dumps)
                 | "WriteStats" >> beam.io.WriteToText(files.join(staging, "tmp", "stats"), shard_name_template=""))
        stats = json.loads(files.read_text(files.join(staging, "tmp", "stats")))
        if not stats["rows"]:
            reasons = {k[len("rejected_"):]: v for k, v in job_counters(p.result, NAMESPACE).items()
                       if k.startswith("rejected_")}
            raise contracts.ContractError(f"{config.interactions}: no usable row; rejected by column: {reasons} "
                                          f"(check --columns {config.columns} and --time_format {config.time_format})")
        count = {"equal": min(config.num_steps, stats["rows"]), "rows": -(-stats["rows"] // max(config.rows_per_step, 1)),
                 "calendar": (stats["last_day"] - stats["first_day"]) // config.step_days + 1}[steps.mode]
        steps.check_count(count, stats["rows"])
        # Pipeline 2: days, per-user impressions, the shards of each day, the rejects, the items' first days.
        with beam.Pipeline(options=options) as p:
            rows = _parsed_rows(p, paths, config)
            dated = _dated(rows.rows, steps, stats["first_day"])
            first_days = (dated | "ItemSteps" >> beam.Map(lambda r: (r.item_id, r.step))
                          | "OnlyKnown" >> beam.Filter(lambda kv: kv[0] in known)
                          | "FirstStep" >> beam.CombinePerKey(min))
            per_user = (dated | "ByUser" >> beam.Map(lambda r: (r.user_id, r)) | "GroupUsers" >> beam.GroupByKey()
                        | "Impressions" >> beam.FlatMap(_user_impressions, config, known)
                        .with_outputs("rejected", main="impressions"))
            _ = (per_user.impressions
                 | "ByShard" >> beam.Map(lambda kv: ((kv[2]["day"], zlib.crc32(kv[0].encode()) % config.shards_per_day),
                                                     kv))
                 | "GroupShards" >> beam.GroupByKey()
                 | "Write" >> beam.ParDo(WriteShard(staging, config.shards_per_day),
                                         beam.pvalue.AsDict(first_days)))
            _ = ((rows.rejected, per_user.rejected) | "AllRejected" >> beam.Flatten()
                 | "WriteRejected" >> beam.io.WriteToText(files.join(out.rejects, "import"), file_name_suffix=".jsonl"))
            _ = (first_days | "FirstDaysJson" >> beam.Map(json.dumps)
                 | "WriteFirstDays" >> beam.io.WriteToText(files.join(staging, "tmp", "first_days"),
                                                           file_name_suffix=".jsonl"))
        counters = job_counters(p.result, NAMESPACE)
        counters["items_rejected"] = len(rejected_items)
        if rejected_items:
            files.write_text(files.join(out.rejects, "items.jsonl"), "".join(line + "\n" for line in rejected_items))
        impressed = dict(json.loads(line) for path in files.glob(files.join(staging, "tmp", "first_days*"))
                         for line in files.read_text(path).splitlines())
        days = out.days()
        after_logs = (max(days) + 1) if days else 1  # never impressed: "arrives" after the logs
        corpus.first_day = np.array([own_first_days.get(i, impressed.get(i, after_logs)) for i in corpus.item_ids],
                                    np.int64)
        corpus_io.write_corpus(out.corpus, corpus)
        files.remove(files.join(staging, "tmp"))
        summary = log_summary.summarise_parts((log_io.read_logs(out, days=[d]) for d in days), corpus)
        summary.update(import_config=dataclasses.asdict(config), counters=counters)
        files.write_json(out.summary, summary)
    log(describe({"output": config.output, "counters": counters, "summary": summary}))
    return {"output": config.output, "counters": counters, "summary": summary}


def _user_impressions(element, config: ImportConfig, known: set):
    """(user, rows) -> (user, order, impression) for each impression; rejected rows (JSON) to "rejected"."""
    user, rows = element
    made, rejected = rules.user_rows(list(rows), config.consumed, config.max_history, known.__contains__)
    for order, impression in enumerate(made):
        yield user, order, impression
    for row, field, reason in rejected:
        Metrics.counter(NAMESPACE, "rows_rejected").inc()
        Metrics.counter(NAMESPACE, f"rejected_{field}").inc()
        yield beam.pvalue.TaggedOutput("rejected", contracts.rejection_json(
            contracts.Rejection(row.source, row.row, field, reason),
            {"user": row.user_id, "item": row.item_id, "time": row.time}))


def describe(result: dict) -> str:
    """Rows in and out, rejected by reason, and the days written."""
    c, s = result["counters"], result["summary"]
    reasons = ", ".join(f"{k[len('rejected_'):]} {v:,}" for k, v in sorted(c.items()) if k.startswith("rejected_"))
    per_day = ", ".join(f"day {d['day']}: {d['impressions']:,}" for d in s["per_day"])
    return (f"{c.get('rows_read', 0):,} rows read, {s['impressions']:,} impressions written, "
            f"{c.get('rows_rejected', 0):,} rejected ({reasons or 'none'}); {s['users']:,} users, {s['items']:,} items\n"
            f"{per_day}\ndata: {result['output']}")


def movielens_preset(config, output: str) -> ImportConfig:
    """`sidrec movielens`: ratings.csv with item_ids.txt, item_embeddings.npy and movies.csv's titles. Every
    rating is consumed (the watch item is the previous rated movie), click = rating >= the threshold,
    engagement = rating / 5; steps as the MovieLens flags say (pipeline.data.movielens.MovieLensConfig)."""
    data = config.resolved_dir
    mode = "rows" if config.ratings_per_step else "calendar" if config.step_days else "equal"
    return ImportConfig(
        interactions=files.join(data, "ratings.csv"), columns="user=userId,item=movieId,time=timestamp,rating=rating",
        output=output, format="csv", time_format="s", click_threshold=config.click_threshold, rating_max=5.0,
        consumed="any", max_history=config.max_history, day_mode=mode, num_steps=config.num_steps,
        rows_per_step=config.ratings_per_step, step_days=config.step_days or 1,
        item_ids=files.join(data, "item_ids.txt"), embeddings=files.join(data, "item_embeddings.npy"),
        titles=files.join(data, "movies.csv"), title_columns="item=movieId,title=title", shards_per_day=1)


def main(argv=None) -> dict:
    """`python -m beam_jobs.import_interactions --interactions ... --columns ... --output ... [Beam flags]`."""
    return run(*config_flags.parse_known(ImportConfig, argv, __doc__, SHIPPING_HELP))


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    main()
