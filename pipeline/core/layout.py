"""The stable layout of a run directory: every stage reads and writes its artefacts through here."""

import dataclasses
import os
import re

_DAY_DIR = re.compile(r"^day=(\d+)$")
LOG_FILE_PATTERN = "impressions-*.tfrecord.gz"
# The ranker's input is written uncompressed: the trainer reads every day twice (evaluation, then
# training), and with dense content features inflating is its bottleneck while GZIP saves ~20%.
TRANSFORMED_SUFFIX = ".tfrecord"


@dataclasses.dataclass(frozen=True)
class DataLayout:
    """A data set: a corpus file and day-partitioned impression logs (what a user brings)."""

    root: str

    @property
    def corpus(self) -> str:
        return os.path.join(self.root, "corpus.parquet")

    @property
    def logs(self) -> str:
        return os.path.join(self.root, "logs")

    def day_dir(self, day: int) -> str:
        return os.path.join(self.logs, f"day={day:04d}")

    def day_file(self, day: int, shard: int = 0, num_shards: int = 1) -> str:
        return os.path.join(self.day_dir(day), f"impressions-{shard:05d}-of-{num_shards:05d}.tfrecord.gz")

    @property
    def truth(self) -> str:
        """Simulator ground truth per item (topic path, quality); absent for real data."""
        return os.path.join(self.root, "truth", "items.parquet")

    @property
    def rejects(self) -> str:
        """Rows a loader could not use, with the reason, as JSON lines."""
        return os.path.join(self.root, "rejects")

    @property
    def summary(self) -> str:
        return os.path.join(self.root, "summary.json")

    def days(self) -> list[int]:
        """The days that have a log partition, sorted."""
        if not os.path.isdir(self.logs):
            return []
        found = (_DAY_DIR.match(name) for name in os.listdir(self.logs))
        return sorted(int(m.group(1)) for m in found if m)


def transformed_day_prefix(transform_dir: str, day: int) -> str:
    """Where a transform job writes day `day`'s examples (shards PREFIX-*-of-*.tfrecord)."""
    return os.path.join(transform_dir, "transformed", f"day={day:04d}", "part")


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """Everything one run produces, under runs/<name>/, so any stage can be re-run alone."""

    root: str

    @property
    def data(self) -> DataLayout:
        return DataLayout(os.path.join(self.root, "data"))

    @property
    def rqvae(self) -> str:
        return os.path.join(self.root, "rqvae")

    @property
    def sids(self) -> str:
        return os.path.join(self.root, "sids")

    @property
    def transform(self) -> str:
        return os.path.join(self.root, "transform")

    @property
    def ranker(self) -> str:
        return os.path.join(self.root, "ranker")

    @property
    def export(self) -> str:
        return os.path.join(self.root, "export")

    @property
    def metrics(self) -> str:
        return os.path.join(self.root, "metrics")

    @property
    def report(self) -> str:
        return os.path.join(self.root, "report")
