"""tf.distribute strategies for the ranker, and which worker writes (the chief).

`default` trains in one process on its devices as they are; `mirrored` replicates over the local
GPUs, or over `cpu_replicas` logical CPU devices where there is none (the CPU stand-in for several
accelerators); `multi_worker` is MultiWorkerMirroredStrategy over the cluster in TF_CONFIG; `tpu`
is TPUStrategy on `--tpu` (a TPU name or grpc:// address, "local" on a TPU VM), where the item
table becomes a sharded TPUEmbedding table. How the model trains is the same under each: the
global batch is split over the replicas and the loss is averaged over it (models.ranker).
"""

import json
import os

from pipeline.core.configs import STRATEGIES, DistributionConfig  # noqa: F401  (re-exported)
from pipeline.core.tf_env import tf


def make_strategy(config: DistributionConfig) -> tf.distribute.Strategy:
    """The strategy `config` names. Call before TensorFlow has run anything (devices are set up here).

    Raises:
      ValueError: multi_worker without TF_CONFIG.
    """
    if config.strategy == "default":
        return tf.distribute.get_strategy()
    if config.strategy == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy(_logical_cpus(config.cpu_replicas))
    if config.strategy == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy multi_worker reads the cluster from TF_CONFIG, which is not set")
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="" if config.tpu == "local" else config.tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _logical_cpus(count: int) -> list[str]:
    """Splits the CPU into `count` logical devices (once per process) and names them."""
    [cpu] = tf.config.list_physical_devices("CPU")
    existing = tf.config.get_logical_device_configuration(cpu)
    if existing is None:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    elif len(existing) < count:
        raise ValueError(f"this process already split the CPU into {len(existing)} devices; "
                         f"--cpu_replicas {count} needs a new process")
    return [d.name for d in tf.config.list_logical_devices("CPU")[:count]]


def task(strategy: tf.distribute.Strategy) -> tuple[str, int]:
    """(task type, task id) of this process in a multi-worker cluster; ("chief", 0) otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "chief", 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's checkpoints, metrics and exports.

    The chief is the "chief" task, else worker 0 of a cluster that has no chief (TF's own rule).
    """
    task_type, task_id = task(strategy)
    if task_type == "chief":
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def shard_per_worker(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Each worker reads its share of every day's batches (DATA sharding: days have few files)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
