"""The day loop under tf.distribute: MirroredStrategy over two logical CPUs trains as the default does;
two MultiWorkerMirroredStrategy workers on localhost train the days and leave one run and one export."""

import json
import os
import socket
import subprocess
import sys

import pytest

from models import distribution
from pipeline.core.layout import RankerLayout
from pipeline.stages import day_loop

CONFIG = day_loop.TrainConfig(batch_size=256, hidden_dims=(32,))
# Each worker or strategy run is its own process: devices are set up once per process.
# The script keeps the ranker the day loop builds, to ask the model itself where it trained: the strategy it
# was built under and whether its variables are distributed ones (mirrored across the replicas).
TRAIN = """
import json, sys
from pipeline.core.tf_env import tf
from models import distribution
from pipeline.stages import day_loop
transform_dir, output_dir, strategy = sys.argv[1:4]
strategy = distribution.make_strategy(distribution.DistributionConfig(strategy=strategy))
built, build_ranker = [], day_loop.build_ranker
day_loop.build_ranker = lambda *args: built.append(build_ranker(*args)) or built[-1]
config = day_loop.TrainConfig(batch_size=256, hidden_dims=(32,))
history = day_loop.train(transform_dir, output_dir, config, log=lambda *_: None, strategy=strategy)
[model] = built
local = [v.name for v in model.trainable_variables if not isinstance(v, tf.distribute.DistributedValues)]
print("REPLICAS " + str(model.distribute_strategy.num_replicas_in_sync), flush=True)
print("LOCAL VARIABLES " + json.dumps(local), flush=True)
print("HISTORY " + json.dumps(history if distribution.is_chief(strategy) else []), flush=True)
"""


def _train(transform_dir: str, output_dir: str, strategy: str, env=None, wait=True):
    process = subprocess.Popen([sys.executable, "-c", TRAIN, transform_dir, output_dir, strategy],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    return _history(process) if wait else process


def _history(process, replicas: int = 2) -> list[dict]:
    """The run's history, once the process has said it trained over `replicas` replicas."""
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    assert f"REPLICAS {replicas}\n" in out, "the model was not built under the strategy"
    assert "LOCAL VARIABLES []\n" in out, "some of the model's variables are not distributed"
    return json.loads(out.split("HISTORY ", 1)[1])


def _metrics(history):
    return [(e["evaluated_on_day"], e["ctr_auc"], e["ctr_1d_auc"], e["engagement_rmse"]) for e in history]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def default_history(spm_run, tmp_path_factory):
    return day_loop.train(spm_run["output"], str(tmp_path_factory.mktemp("default") / "run"), CONFIG,
                          log=lambda *_: None)


def test_mirrored_over_two_logical_cpus_gives_the_metrics_of_the_default_strategy(spm_run, default_history,
                                                                                 tmp_path):
    mirrored = _train(spm_run["output"], str(tmp_path / "run"), "mirrored")
    assert [m[0] for m in _metrics(mirrored)] == [m[0] for m in _metrics(default_history)] == [2, 3]
    for a, b in zip(_metrics(mirrored), _metrics(default_history)):
        # Same global batch, same loss, same lazy updates: only the order of float sums differs (measured: 6e-6).
        assert a[1:] == pytest.approx(b[1:], abs=1e-3)


def test_two_workers_on_localhost_train_every_day_and_only_the_chief_writes(spm_run, default_history, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    output = str(tmp_path / "run")
    scratch_before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    workers = [_train(spm_run["output"], output, "multi_worker", wait=False,
                      env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
               for i in range(2)]
    chief, other = (_history(w) for w in workers)
    assert other == []
    assert [m[0] for m in _metrics(chief)] == [2, 3]
    for a, b in zip(_metrics(chief), _metrics(default_history)):
        # Each worker trains on its half of every global batch: the same model up to the order of sums
        # (measured: 6e-6). Workers that each read the whole day (no sharding) move the AUCs by 0.02-0.05.
        assert a[1:] == pytest.approx(b[1:], abs=1e-3)
    run = RankerLayout(output)
    assert os.path.isdir(run.checkpoints) and len([f for f in os.listdir(run.checkpoints) if f.endswith(".index")]) >= 1
    assert sorted(os.listdir(run.export)) == ["1", "2", "3"]  # one export per day, from the chief only
    assert os.listdir(tmp_path) == ["run"]
    leftovers = {f for f in os.listdir(os.environ.get("TMPDIR", "/tmp")) if f.startswith("sidrec-worker-")}
    assert not leftovers - scratch_before, "a worker left its scratch directory behind"


def test_strategy_flags_are_checked_early(monkeypatch):
    with pytest.raises(ValueError, match="--strategy must be one of"):
        distribution.DistributionConfig(strategy="horovod")
    with pytest.raises(ValueError, match="needs --tpu"):
        distribution.DistributionConfig(strategy="tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribution.make_strategy(distribution.DistributionConfig(strategy="multi_worker"))


def test_the_chief_is_the_chief_task_else_worker_zero(monkeypatch):
    class Resolver:
        def __init__(self, task_type, task_id):
            self.task_type, self.task_id = task_type, task_id

    class Strategy:
        def __init__(self, task_type, task_id):
            self.cluster_resolver = Resolver(task_type, task_id)

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}}))
    assert distribution.is_chief(Strategy("worker", 0)) and not distribution.is_chief(Strategy("worker", 1))
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}}))
    assert distribution.is_chief(Strategy("chief", 0)) and not distribution.is_chief(Strategy("worker", 0))
