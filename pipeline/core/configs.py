"""The typed configs of the models, the Beam jobs and the server, importable without TensorFlow or Beam.

The CLI builds every command's flags from these dataclasses (pipeline.core.config_flags), so `sidrec
--help` and `sidrec COMMAND --help` answer without loading TensorFlow; the modules that run them
(models/, beam_jobs/, serving/) import them from here. The stages' own configs are in
pipeline/stages/configs.py.
"""

import argparse
import dataclasses
import os

from pipeline.core import features as fk
from pipeline.core import config_flags, fingerprint
from pipeline.core.config_flags import flag
from pipeline.core.representation import KINDS, Kind, split_kind

# The multitask trunks models/trunks.py builds, by name.
TRUNKS = ("shared_bottom", "mmoe")
# What `--help` of a Beam command says about shipping the project to remote workers (beam_jobs/options.py).
SHIPPING_HELP = ("Beam flags pass through: --runner=DataflowRunner --project P --region R --temp_location gs://B/tmp; "
                 "workers get the project from --setup_file ./setup.py (the default for a remote runner) or "
                 "--sdk_container_image IMAGE built from beam_jobs/Dockerfile")


# ---- the RQ-VAE (models/rqvae.py)
@dataclasses.dataclass(frozen=True)
class RQVAEConfig:
    """Architecture and training of the tokenizer (defaults: the demo; the paper: L=8, K=2048)."""

    encoder_dims: tuple[int, ...] = flag(
        (256, 32), "encoder layer widths, ReLU between them; the last is the latent dim. The paper "
                   "states one layer of 256 (--encoder_dims 256); a 32-d latent after it keeps the "
                   "deeper levels from collapsing (see docs/rqvae.md)")
    num_levels: int = flag(4, "L: codes per SID (the paper: 8)")
    codebook_size: int = flag(256, "K: codes per level (the paper: 2048)")
    beta: float = flag(0.25, "commitment weight")
    learning_rate: float = flag(1e-3, "Adam learning rate")
    batch_size: int = flag(512, "items per training step")
    max_epochs: int = flag(200, "upper bound on epochs")
    patience: int = flag(5, "stop after this many epochs without a relative improvement of "
                            "the reconstruction loss of at least min_improvement")
    min_improvement: float = flag(0.005, "relative improvement that counts as progress")
    kmeans_init: bool = flag(True, "seed each level by k-means on the residuals of the first items")
    kmeans_iterations: int = flag(15, "Lloyd iterations of the k-means initialisation")
    reset_interval: int = flag(20, "reset codes unused over this many steps (0: never)")
    seed: int = flag(0, "random seed: the same seed gives the same model and SIDs")

    def __post_init__(self):
        if not self.encoder_dims or min(self.encoder_dims) < 1:
            raise ValueError(f"encoder_dims must be positive widths, got {self.encoder_dims}")
        for name in ("num_levels", "codebook_size", "batch_size", "max_epochs", "patience",
                     "kmeans_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if self.reset_interval < 0:
            raise ValueError(f"reset_interval must be >= 0, got {self.reset_interval}")

    @property
    def latent_dim(self) -> int:
        return self.encoder_dims[-1]


# ---- where the ranker trains (models/distribution.py)
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


@dataclasses.dataclass(frozen=True)
class DistributionConfig:
    """Where the ranker trains; not part of what it trains (a run's fingerprint leaves it out)."""

    strategy: str = flag("default", f"tf.distribute strategy: {', '.join(STRATEGIES)} (multi_worker reads the "
                                    "cluster from TF_CONFIG; tpu needs --tpu)")
    tpu: str = flag("", "TPU name or grpc:// address for --strategy tpu ('local' on a TPU VM)")
    cpu_replicas: int = flag(2, "--strategy mirrored without GPUs: replicas on this many logical CPU devices")

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.strategy == "tpu" and not self.tpu:
            raise ValueError("--strategy tpu needs --tpu (a TPU name, grpc:// address, or 'local')")
        if self.cpu_replicas < 1:
            raise ValueError(f"--cpu_replicas must be >= 1, got {self.cpu_replicas}")


# ---- the Beam jobs (beam_jobs/materialize_sids.py, beam_jobs/transform.py)
PREFIX_SAMPLE_SIZE = 20_000  # items in the SID statistics' prefix-similarity sample


@dataclasses.dataclass(frozen=True)
class MaterializeConfig:
    """What the job reads and writes; every other flag goes to Beam's PipelineOptions."""

    corpus: str = flag("", "corpus file pattern: *.parquet, else TFRecord of tf.Example")
    model: str = flag("", "RQ-VAE export: a version directory or the base directory (newest version)")
    output: str = flag("", "SID table directory (replaced atomically)")
    existing_table: str = flag("", "incremental: keep the SIDs of the items in this SID table directory")
    append: bool = flag(False, "incremental, with --existing_table the same directory as --output: only the "
                               "corpus items the table lacks go through the model, and their SIDs are added to "
                               "the table as new shards (nothing else is rewritten; a rerun adds what is missing)")
    num_shards: int = flag(0, "output shards (0: the runner decides)")
    sample_size: int = flag(PREFIX_SAMPLE_SIZE,
                            "items in the prefix-similarity sample (bottom-k by id fingerprint)")
    buckets: int = flag(64, "hash buckets for id and prefix counting: one worker holds about items x L / "
                            "buckets keys (raise it for corpora of 100M+ items)")
    chunk_rows: int = flag(2048, "rows per unit of work (validation, inference, writing)")

    def __post_init__(self):
        for name in ("corpus", "model", "output"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        if self.chunk_rows < 1 or self.buckets < 1:
            raise ValueError("chunk_rows and buckets must be >= 1")
        if self.append and self.existing_table.rstrip("/") != self.output.rstrip("/"):
            raise ValueError("--append adds to the table it reads: give --existing_table the same directory as "
                             f"--output (got {self.existing_table!r} and {self.output!r})")


SHUFFLE_JOIN_ABOVE = 5_000_000  # items above which the item join is keyed (the daily job decides alike)


@dataclasses.dataclass(frozen=True)
class TransformConfig:
    """What the job reads and writes, and the representation; every other flag goes to Beam."""

    data_dir: str = flag("", "corpus.parquet and logs/day=NNNN/")
    sids: str = flag("", "SID table directory (from `sidrec materialize`)")
    output: str = flag("", "transform output directory (replaced atomically)")
    kind: str = flag(Kind.SID_SPM.value, f"item representation: {', '.join(KINDS)} (KIND+id: the SID pieces plus "
                                         "a random-hash ID piece of --id_buckets rows)")
    buckets: int = flag(8192, "random_hash and sid_prefix buckets B")
    ngram: int = flag(2, "sid_ngram N (must divide L)")
    vocab_size: int = flag(8192, "sid_spm table size V")
    prefix_lengths: tuple[int, ...] = flag((), "sid_prefix: comma-separated prefix lengths that make an item's pieces "
                                                "(empty: 1..L)")
    id_buckets: int = flag(1024, "KIND+id: rows of the ID table added to the SID pieces")
    eval_from: int = flag(0, "first evaluation day T+1: vocabularies and analyzers learn from days 1..T only, and "
                             "each day from T+1 on is evaluated before the model trains on it (default: the "
                             "second half of the days is evaluated)")
    max_history: int = flag(fk.DEFAULT_MAX_HISTORY,
                            "history cap H of the log contract: rows with longer histories are rejected")
    if_changed: str = flag("rebuild", "when the output exists but was made from other inputs: rebuild it, or refuse "
                                      f"({' or '.join(fingerprint.POLICIES)})")
    shuffle_join_above: int = flag(SHUFFLE_JOIN_ABOVE, "items (SID table or corpus rows) above which the item "
                                                       "features are joined by key (CoGroupByKey) instead of tables "
                                                       "every worker process loads whole; the output is the same")

    def __post_init__(self):
        for name in ("data_dir", "sids", "output"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        if split_kind(self.kind)[1] and self.id_buckets < 1:
            raise ValueError(f"--kind {self.kind} needs --id_buckets >= 1, got {self.id_buckets}")
        if self.if_changed not in fingerprint.POLICIES:
            raise ValueError(f"--if_changed must be one of {', '.join(fingerprint.POLICIES)}, got {self.if_changed!r}")


# ---- the server (serving/)
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_CONCURRENT_RPCS = 64
# TF Serving's REST defaults: threads by the CPUs, 30 s a request. Connections past the cap are refused (ours).
REST_NUM_THREADS = 4 * (os.cpu_count() or 1)
REST_TIMEOUT_MS = 30_000
REST_MAX_CONNECTIONS = 1024


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """The fields of TF Serving's BatchingParameters that this server honours."""

    max_batch_size: int = flag(1024, "most rows (tf.Examples) in one batched signature call")
    batch_timeout_micros: int = flag(1000, "how long the first request of a batch waits for others")
    max_enqueued_batches: int = flag(16, "queued rows beyond this many full batches get UNAVAILABLE")
    num_batch_threads: int = flag(2, "batches formed and run in parallel")

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value < (0 if field.name == "batch_timeout_micros" else 1):
                raise ValueError(f"batching parameter {field.name} must be positive, got {value}")


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """`sidrec serve`'s flags: TF Serving's model server's, by their names, and its batching parameters."""
    parser.add_argument("--model_name", default="ranker", help="the model name clients ask for")
    parser.add_argument("--model_base_path", default="", help="directory of integer version directories")
    parser.add_argument("--model_config_file", default="",
                        help="text-format ModelServerConfig with a model_config_list: models, version policies, "
                             "version labels (instead of the two above)")
    parser.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0,
                        help="how often to reread --model_config_file and apply it as ReloadConfig does (0: never)")
    parser.add_argument("--allow_version_labels_for_unavailable_models", action="store_true",
                        help="a new label may name a version that is not loaded yet")
    parser.add_argument("--host", default="127.0.0.1", help="address both APIs bind (0.0.0.0 exposes them)")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (0: any free port, printed)")
    parser.add_argument("--rest_api_port", type=int, default=0,
                        help="REST API port (0: no REST API; -1: any free port, printed)")
    parser.add_argument("--rest_api_num_threads", type=int, default=REST_NUM_THREADS,
                        help="threads that answer REST requests (TF Serving's flag); connections waiting for a "
                             "request hold none")
    parser.add_argument("--rest_api_timeout_in_ms", type=int, default=REST_TIMEOUT_MS,
                        help="a REST request not read and answered within this is closed, as an idle keep-alive "
                             "connection is (TF Serving's flag)")
    parser.add_argument("--rest_api_max_connections", type=int, default=REST_MAX_CONNECTIONS,
                        help="open REST connections past this are closed at once")
    parser.add_argument("--monitoring_config_file", default="",
                        help="text-format MonitoringConfig; prometheus_config serves metrics on the REST port")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="how often to look for new versions")
    parser.add_argument("--max_request_bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                        help="larger requests get RESOURCE_EXHAUSTED (gRPC) or 413 (REST)")
    parser.add_argument("--max_concurrent_rpcs", type=int, default=DEFAULT_MAX_CONCURRENT_RPCS,
                        help="more concurrent requests get RESOURCE_EXHAUSTED (gRPC) or 429 (REST), per API")
    parser.add_argument("--enable_batching", action="store_true",
                        help="run concurrent Predict requests as one batched call (the flags below, or the file)")
    parser.add_argument("--batching_parameters_file", default="",
                        help="text-format BatchingParameters (TF Serving's); the fields it sets replace the flags")
    config_flags.add_flags(parser, BatchingParameters)
