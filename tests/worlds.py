"""Small simulated worlds the tests share: Beam options, a tiny RQ-VAE, a run with SIDs, transforms."""

import os

from models.rqvae import RQVAEConfig
from pipeline.core.layout import RunLayout
from pipeline.data.simulator import SimulatorConfig

IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
TINY = RQVAEConfig(encoder_dims=(32, 8), num_levels=4, codebook_size=16, batch_size=128, max_epochs=6,
                   patience=2, kmeans_iterations=5)
SMALL_WORLD = SimulatorConfig(num_items=1500, num_users=200, num_days=3, impressions_per_day=1500, embedding_dim=32)


def small_run(root: str, world: SimulatorConfig = SMALL_WORLD) -> RunLayout:
    """A simulated run (default 3 days x 1,500 impressions) with SIDs materialised by a tiny RQ-VAE."""
    from beam_jobs import materialize_sids
    from models import rqvae_savedmodel
    from pipeline.data import corpus_io
    from pipeline.stages import train_rqvae as rqvae_job
    from pipeline.stages.simulate import run as simulate_run

    layout = RunLayout(root)
    simulate_run(world, layout)
    corpus = corpus_io.read_corpus(layout.data.corpus)
    model, _ = rqvae_job.train(corpus.embeddings, TINY, lambda *_: None)
    export = rqvae_savedmodel.export(model, os.path.join(layout.rqvae, "export"))
    materialize_sids.run(materialize_sids.MaterializeConfig(corpus=layout.data.corpus, model=export, output=layout.sids),
                         IN_MEMORY)
    return layout


def run_transform(layout: RunLayout, kind: str, **flags) -> dict:
    """The transform job on `layout` into ROOT/<kind>; `flags` are TransformConfig fields (vocab_size=...)."""
    from beam_jobs import transform

    return transform.run(transform.TransformConfig(data_dir=layout.data.root, sids=layout.sids,
                                                   output=os.path.join(layout.root, kind), kind=kind, **flags),
                         IN_MEMORY)


def copy_world(layout: RunLayout, root: str) -> RunLayout:
    """A copy of a run's data and SID table under `root`, to change without touching the original."""
    import shutil

    copy = RunLayout(root)
    shutil.copytree(layout.data.root, copy.data.root)
    shutil.copytree(layout.sids, copy.sids)
    return copy


def bad_log_rows(day: int):
    """A log day's rows plus one row breaking each row rule, and the (field, reason words) of each."""
    import dataclasses

    import numpy as np

    from pipeline.core.records import Impressions

    def with_bad_rows(good: Impressions) -> Impressions:
        first = good.select(np.arange(good.size) == 0)
        rows = [dataclasses.replace(first, click=np.array([2])),
                dataclasses.replace(first, engagement=np.array([1.5], np.float32)),
                dataclasses.replace(first, day=np.array([day + 5])),
                dataclasses.replace(first, history_values=np.array([good.candidate_item_id[0]] * 21, dtype=object),
                                    history_lengths=np.array([21]))]
        return Impressions.concatenate([good, *rows])

    expected = [("click", "expected 0 or 1"), ("engagement", "in [0, 1]"),
                ("day", f"in the partition of day {day}"), ("history_item_ids", "expected at most 20")]
    return with_bad_rows, expected


def edited_example(record: bytes, **features) -> bytes:
    """A serialized tf.Example with some int64 features replaced (or bytes features, given str values)."""
    import tensorflow as tf

    example = tf.train.Example.FromString(record)
    for key, values in features.items():
        feature = example.features.feature[key]
        feature.Clear()
        if values and isinstance(values[0], str):
            feature.bytes_list.value.extend(v.encode() for v in values)
        else:
            feature.int64_list.value.extend(values)
    return example.SerializeToString()


def bad_sid_requests(record: bytes, num_levels: int = TINY.num_levels) -> list[tuple[str, bytes, str]]:
    """(case, serialized request row, the feature its error must name) for SIDs a server must refuse."""
    import tensorflow as tf

    from pipeline.core import features as fk

    example = tf.train.Example.FromString(record)
    history = list(example.features.feature[fk.HISTORY_ITEM_IDS].bytes_list.value)[:1] or [b"x"]
    return [
        ("code above K", edited_example(record, candidate_sid=[99999] * num_levels), fk.CANDIDATE_SID),
        ("negative code", edited_example(record, candidate_sid=[-5] * num_levels), fk.CANDIDATE_SID),
        ("watch SID of the wrong length", edited_example(record, watch_sid=[1] * (num_levels - 1)), fk.WATCH_SID),
        ("history code above K", edited_example(record, history_item_ids=[history[0].decode()],
                                                history_sids=[0] * (num_levels - 1) + [TINY.codebook_size]),
         fk.HISTORY_SIDS),
        ("history SIDs of the wrong length", edited_example(record, history_item_ids=[history[0].decode()],
                                                            history_sids=[1] * (num_levels + 1)), fk.HISTORY_SIDS),
        ("history longer than H", edited_example(record, history_item_ids=[history[0].decode()] * 21,
                                                 history_sids=[1] * (num_levels * 21)), fk.HISTORY_ITEM_IDS),
    ]


def bad_embedding_requests(record: bytes, dim: int) -> list[tuple[str, bytes, str]]:
    """(case, serialized request row, the feature its error must name) for embeddings a server must refuse."""
    import tensorflow as tf

    from pipeline.core import features as fk

    example = tf.train.Example.FromString(record)
    history_items = len(example.features.feature[fk.HISTORY_ITEM_IDS].bytes_list.value)

    def edited(key, values):
        copy = tf.train.Example.FromString(record)
        copy.features.feature[key].float_list.value.extend(values)
        return copy.SerializeToString()

    return [("watch embedding of the wrong length", edited(fk.WATCH_EMBEDDING, [0.1] * (dim - 1)), fk.WATCH_EMBEDDING),
            ("candidate embedding with a NaN", edited(fk.CANDIDATE_EMBEDDING, [float("nan")] + [0.1] * (dim - 1)),
             fk.CANDIDATE_EMBEDDING),
            ("history embeddings of the wrong length", edited(fk.HISTORY_EMBEDDINGS, [0.1] * (dim * history_items + 1)),
             fk.HISTORY_EMBEDDINGS)]


def start_server(*flags, printed=None, stderr_path=None):
    """Starts `sidrec serve` on a free port; returns (process, host:port). `printed` collects what it said first;
    its log goes to `stderr_path` if given. With `--rest_api_port -1`, `process.rest` is the REST API's host:port."""
    import subprocess
    import sys

    stderr = open(stderr_path, "w") if stderr_path else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", "--port", "0",
                                "--file_system_poll_wait_seconds", "0.2", *flags],
                               stdout=subprocess.PIPE, stderr=stderr, text=True)
    process.rest = None
    for line in process.stdout:
        if line.startswith("REST API on "):
            process.rest = line.split()[3].rstrip(";")
        if line.startswith("listening on "):
            return process, line.split()[-1]
        if printed is not None:
            printed.append(line)
    raise RuntimeError(f"server exited with {process.wait()} before listening")


class PredictionStream:
    """Predict requests sent over and over from a thread while a test changes what is served:
    `answers` holds (outputs, version) of each, `failures` the gRPC errors.

      with PredictionStream(target, "ranker", records) as stream:
          ...publish...
          stream.wait_for_version(3)
    """

    def __init__(self, target: str, model_name: str, records: list[bytes], pause: float = 0.0, label: str = ""):
        import threading

        from serving.client import RankerClient

        self.answers, self.failures = [], []
        self._client, self._model, self._records, self._pause = RankerClient(target), model_name, records, pause
        self._label = label
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._stream)

    def _stream(self):
        import time

        import grpc

        while not self._stop.is_set():
            try:
                self.answers.append(self._client.predict(self._model, self._records, version_label=self._label))
            except grpc.RpcError as e:
                self.failures.append(e)
            time.sleep(self._pause)

    def wait_for_version(self, version: int, timeout: float = 60.0) -> None:
        import time

        deadline = time.time() + timeout
        while (not self.answers or self.answers[-1][1] != version) and time.time() < deadline:
            time.sleep(0.2)

    @property
    def versions(self) -> list[int]:
        return [version for _, version in self.answers]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
