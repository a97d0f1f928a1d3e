"""The stable layout of a run directory: every artefact name is written here and only here.

  runs/<name>/data/        corpus.parquet, logs/day=NNNN/impressions-*.tfrecord.gz   (DataLayout)
              rqvae/       export/<version>/ (frozen RQ-VAE), sid_quality.json        (RQVAELayout)
              sids/        table/*.parquet, tfrecord/, rejected/, stats.json          (SidTableLayout)
              transform/<representation>/  transform_fn, transformed/day=NNNN/, ... (TransformLayout)
              ranker/<label>-<config hash>/ checkpoints, metrics.jsonl, export/<day>/ (RankerLayout)
              serving/<model>/<version>/  blessed exports a server watches (sidrec daily)
              metrics/ (experiment.json, lookups.json; study.json in a study), report/
Every stage output also holds fingerprint.json (pipeline.core.fingerprint).
"""

import dataclasses
import os
import re

from pipeline.core.contracts import MissingOutputError

_DAY_DIR = re.compile(r"^day=(\d+)$")
LOG_FILE_PATTERN = "impressions-*.tfrecord.gz"
# The ranker's input is written uncompressed: the trainer reads every day twice (evaluation, then
# training), and with dense content features inflating is its bottleneck while GZIP saves ~20%.
TRANSFORMED_SUFFIX = ".tfrecord"
FINGERPRINT_FILE = "fingerprint.json"
# What a user runs when a data set (corpus and logs) is missing.
MAKES_DATA = "`sidrec simulate` or `sidrec movielens`, or bring your own (docs/contracts.md)"
SAVED_MODEL_FILE = "saved_model.pb"
# The report's pictures (RunLayout.plot), one per stage that draws.
REPORT_PLOTS = ("simulated_logs", "rqvae_training", "sid_quality", "lookups_per_item", "experiment", "per_day")
# TF Serving's side directory of a SavedModel: warm-up requests and our cards.
ASSETS_EXTRA = "assets.extra"


def _join(root: str, *parts: str) -> str:
    return os.path.join(root, *parts)


@dataclasses.dataclass(frozen=True)
class DataLayout:
    """A data set: a corpus file and day-partitioned impression logs (what a user brings)."""

    root: str

    @property
    def corpus(self) -> str:
        return _join(self.root, "corpus.parquet")

    @property
    def logs(self) -> str:
        return _join(self.root, "logs")

    def day_dir(self, day: int) -> str:
        return _join(self.logs, f"day={day:04d}")

    def day_file(self, day: int, shard: int = 0, num_shards: int = 1) -> str:
        return _join(self.day_dir(day), f"impressions-{shard:05d}-of-{num_shards:05d}.tfrecord.gz")

    def day_pattern(self, day: int) -> str:
        return _join(self.day_dir(day), LOG_FILE_PATTERN)

    @property
    def truth(self) -> str:
        """Simulator ground truth per item (topic path, quality); absent for real data."""
        return _join(self.root, "truth", "items.parquet")

    @property
    def rejects(self) -> str:
        """Rows a loader could not use, with the reason, as JSON lines."""
        return _join(self.root, "rejects")

    def rejects_file(self, what: str) -> str:
        return _join(self.rejects, f"{what}.jsonl")

    @property
    def summary(self) -> str:
        return _join(self.root, "summary.json")

    @property
    def arrivals(self) -> str:
        """A corpus file of items that arrived after the last SID materialisation (the demo ranks them)."""
        return _join(self.root, "arrivals.parquet")

    def logged_days(self) -> list[int]:
        """The days that have a log partition, sorted; none raises MissingOutputError saying what makes them."""
        found = self.days()
        if not found:
            raise MissingOutputError("impression logs (directories day=NNNN)", self.logs, MAKES_DATA)
        return found

    def days(self) -> list[int]:
        """The days that have a log partition, sorted."""
        from pipeline.core import files

        found = (_DAY_DIR.match(name) for name in files.listdir(self.logs))
        return sorted(int(m.group(1)) for m in found if m)


@dataclasses.dataclass(frozen=True)
class RQVAELayout:
    """The RQ-VAE stage: versioned frozen exports and the SID quality report."""

    root: str

    @property
    def export(self) -> str:
        """Base directory of the integer export versions."""
        return _join(self.root, "export")

    @property
    def sid_quality(self) -> str:
        return _join(self.root, "sid_quality.json")

    @property
    def training_history(self) -> str:
        return _join(self.root, "training_history.json")


def rqvae_card(export_dir: str) -> str:
    """The frozen RQ-VAE's card (version, K, L, D) inside one export version."""
    return _join(export_dir, ASSETS_EXTRA, "rqvae.json")


@dataclasses.dataclass(frozen=True)
class SidTableLayout:
    """The materialisation job's output: the SID table as Parquet and tf.Example, rejects, statistics."""

    root: str

    @property
    def table(self) -> str:
        return _join(self.root, "table")

    @property
    def tfrecord(self) -> str:
        return _join(self.root, "tfrecord")

    @property
    def rejected(self) -> str:
        return _join(self.root, "rejected")

    @property
    def stats(self) -> str:
        return _join(self.root, "stats.json")

    def appended_stats(self, token: str) -> str:
        """The statistics of the items one `--append` run added (stats.json stays the table's as made)."""
        return _join(self.root, "appends", f"{token}.json")


@dataclasses.dataclass(frozen=True)
class TransformLayout:
    """One representation's transform output (TF Transform writes transform_fn/ and metadata itself)."""

    root: str

    @property
    def card(self) -> str:
        """representation.json: the representation, the protocol's split, counters, fingerprint."""
        return _join(self.root, "representation.json")

    @property
    def serving_sample(self) -> str:
        """Raw serving examples (joined, without labels) from the training window: the exports' warm-up."""
        return _join(self.root, "serving_sample.tfrecord.gz")

    @property
    def spm_model(self) -> str:
        return _join(self.root, "spm", "sid_spm.model")

    @property
    def item_impressions(self) -> str:
        """Prefix of the JSON-lines shards of [item_id, impressions in the training window]."""
        return _join(self.root, "item_impressions", "part")

    @property
    def lookups(self) -> str:
        return _join(self.root, "lookups.json")

    @property
    def rejected(self) -> str:
        return _join(self.root, "rejected")

    def rejected_day(self, day: int) -> str:
        """Rejected log rows of a day the daily path transformed (the batch job's go to `rejected` itself)."""
        return _join(self.rejected, f"day={day:04d}")

    @property
    def tmp(self) -> str:
        return _join(self.root, "tmp")

    def day_dir(self, day: int) -> str:
        return _join(self.root, "transformed", f"day={day:04d}")

    def day_prefix(self, day: int) -> str:
        """Where day `day`'s transformed examples go (shards PREFIX-*-of-*.tfrecord)."""
        return _join(self.day_dir(day), "part")

    def held_out_day(self, per_mille: int, day: int) -> str:
        """The raw log rows of the users held out of training on `day` at `per_mille` (what `sidrec daily`
        blesses on), written by the Beam job that read the day."""
        return _join(self.root, "held_out", f"per_mille={per_mille}", f"day={day:04d}")


@dataclasses.dataclass(frozen=True)
class RankerLayout:
    """One day-by-day training run."""

    root: str

    @property
    def metrics(self) -> str:
        return _join(self.root, "metrics.jsonl")

    @property
    def checkpoints(self) -> str:
        return _join(self.root, "checkpoints")

    @property
    def tensorboard(self) -> str:
        return _join(self.root, "tensorboard")

    def daily_step(self, day: int) -> str:
        """The record of `sidrec daily` for a day: metrics, the blessing, the version published (the step's commit)."""
        return _join(self.root, "daily", f"day={day:04d}.json")

    def predictions(self, day: int) -> str:
        """An evaluation day's click probabilities and cold-start flags, in the day's example order."""
        return _join(self.root, "predictions", f"day={day:04d}.npz")

    def probe_predictions(self, day: int) -> str:
        """The click probabilities of the fixed probe (pipeline.core.stability) by the model that evaluated `day`."""
        return _join(self.root, "predictions", f"probe_by_day={day:04d}.npz")

    @property
    def export(self) -> str:
        """Default base of the daily export versions."""
        return _join(self.root, "export")


@dataclasses.dataclass(frozen=True)
class ExportLayout:
    """One ranker export version (a SavedModel TF Serving loads)."""

    root: str

    @property
    def assets_extra(self) -> str:
        return _join(self.root, ASSETS_EXTRA)

    @property
    def warmup(self) -> str:
        return _join(self.assets_extra, "tf_serving_warmup_requests")

    @property
    def card(self) -> str:
        """The representation card the model was trained on (a copy of the transform's)."""
        return _join(self.assets_extra, "representation.json")

    @property
    def rqvae_card(self) -> str:
        """SID representations: the card of the frozen RQ-VAE the export holds (a copy of its export's)."""
        return rqvae_card(self.root)

    @property
    def publication(self) -> str:
        """A version in a serving directory: where it came from, the days it was trained through, its blessing."""
        return _join(self.assets_extra, "publication.json")


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """Everything one run produces, under runs/<name>/, so any stage can be re-run alone."""

    root: str

    @property
    def data(self) -> DataLayout:
        return DataLayout(_join(self.root, "data"))

    @property
    def rqvae(self) -> str:
        return _join(self.root, "rqvae")

    @property
    def sids(self) -> str:
        return _join(self.root, "sids")

    @property
    def transform(self) -> str:
        return _join(self.root, "transform")

    def transform_output(self, representation: str) -> str:
        return _join(self.transform, representation)

    @property
    def ranker(self) -> str:
        return _join(self.root, "ranker")

    def serving(self, model_name: str) -> str:
        """The serving directory of a model: blessed versions only, what a server watches (`sidrec daily`)."""
        return _join(self.root, "serving", model_name)

    @property
    def metrics(self) -> str:
        return _join(self.root, "metrics")

    @property
    def lookups(self) -> str:
        return _join(self.metrics, "lookups.json")

    @property
    def experiment(self) -> str:
        return _join(self.metrics, "experiment.json")

    @property
    def study(self) -> str:
        return _join(self.metrics, "study.json")

    @property
    def report(self) -> str:
        return _join(self.root, "report")

    def plot(self, name: str) -> str:
        """A picture in the report: one of REPORT_PLOTS."""
        if name not in REPORT_PLOTS:
            raise ValueError(f"unknown report plot {name!r}; expected one of {REPORT_PLOTS}")
        return _join(self.report, f"{name}.png")
