"""Server-side batching (TF Serving's --enable_batching): concurrent requests run as one signature call.

Requests wait in one bounded queue. Each batch thread takes the oldest request, adds the next ones
for the same version and signature until the batch holds `max_batch_size` rows or
`batch_timeout_micros` have passed, runs the signature once on the rows concatenated along
dimension 0, and hands every request its slice of the outputs. A batch that fails is rerun request
by request, so a bad request fails alone. Signatures whose inputs or outputs have no batch
dimension, and requests larger than a batch, run on their own.
"""

import dataclasses
import queue
import threading
import time

import grpc
import numpy as np

from google.protobuf import text_format

from pipeline.core import files
from pipeline.core.configs import BatchingParameters  # noqa: F401  (re-exported: the server's flags)
from serving.config_protos import BatchingParametersProto
from serving.monitoring import Metrics
from serving.servables import Servable, ServingError


def read_batching_parameters_file(path: str, defaults: BatchingParameters) -> BatchingParameters:
    """TF Serving's --batching_parameters_file (a text-format BatchingParameters): the fields it sets
    replace `defaults` (the flags); the ones this server cannot honour are refused, by name."""
    try:
        proto = text_format.Parse(files.read_text(path), BatchingParametersProto())
    except text_format.ParseError as e:
        raise ValueError(f"{path}: not a text-format BatchingParameters: {e}") from None
    if proto.allowed_batch_sizes:
        raise ValueError(f"{path}: allowed_batch_sizes is not supported here (a batch runs at the size it has; "
                         "padding a batch of serialized tf.Examples would need rows to pad with)")
    if proto.pad_variable_length_inputs:
        raise ValueError(f"{path}: pad_variable_length_inputs is not supported here (the inputs are serialized "
                         "tf.Examples, one per row, never padded)")
    fields = {f.name: getattr(proto, f.name).value for f in dataclasses.fields(BatchingParameters)
              if proto.HasField(f.name)}
    try:
        return dataclasses.replace(defaults, **fields)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


class _Task:
    def __init__(self, servable: Servable, signature_name: str, arrays: dict):
        self.servable, self.signature_name, self.arrays = servable, signature_name, arrays
        self.rows = len(next(iter(arrays.values())))
        self.done = threading.Event()
        self.outputs: dict | None = None
        self.error: ServingError | None = None

    def key(self) -> tuple:
        return id(self.servable), self.signature_name

    def finish(self, outputs=None, error=None) -> None:
        self.outputs, self.error = outputs, error
        self.done.set()


class Batcher:
    """Runs signature calls for the request threads of a server, batching the concurrent ones."""

    def __init__(self, parameters: BatchingParameters, metrics: Metrics | None = None):
        self.parameters = parameters
        self._metrics = metrics
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._enqueued_rows = 0
        self.requests = self.batches = 0  # counters: requests batched, signature calls made for them
        for i in range(parameters.num_batch_threads):  # daemons: they live as long as the server process
            threading.Thread(target=self._loop, name=f"batch-{i}", daemon=True).start()

    def run(self, servable: Servable, signature_name: str, arrays: dict) -> dict:
        """The signature's outputs for these (validated) inputs; blocks until their batch has run."""
        task = _Task(servable, signature_name, arrays)
        if task.rows > self.parameters.max_batch_size or signature_name not in servable.batchable_signatures:
            return servable.call(signature_name, arrays)
        with self._lock:
            limit = self.parameters.max_enqueued_batches * self.parameters.max_batch_size
            if self._enqueued_rows + task.rows > limit:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "The batch scheduling queue to which this task was "
                                   f"submitted is full ({self._enqueued_rows} rows waiting, at most {limit})")
            self._enqueued_rows += task.rows
        self._queue.put(task)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def _take(self, block: bool, timeout: float | None = None):
        task = self._queue.get(block, timeout)
        with self._lock:
            self._enqueued_rows -= task.rows
        return task

    def _loop(self) -> None:
        held = None  # a task that did not fit the last batch opens the next one
        while True:
            first = held or self._take(block=True)
            held = None
            batch, rows = [first], first.rows
            deadline = time.monotonic() + self.parameters.batch_timeout_micros / 1e6
            while rows < self.parameters.max_batch_size:
                remaining = deadline - time.monotonic()
                try:
                    task = self._take(block=True, timeout=remaining) if remaining > 0 else self._take(block=False)
                except queue.Empty:
                    break
                if task.key() != first.key() or rows + task.rows > self.parameters.max_batch_size:
                    held = task
                    break
                batch.append(task)
                rows += task.rows
            self._execute(batch, rows)

    def _execute(self, batch: list[_Task], rows: int) -> None:
        first = batch[0]
        with self._lock:
            self.requests += len(batch)
            self.batches += 1
        if self._metrics is not None:
            self._metrics.batch(first.servable.name, first.servable.version, rows)
        if len(batch) > 1:
            merged = {k: np.concatenate([t.arrays[k] for t in batch]) for k in first.arrays}
            try:
                outputs = first.servable.call(first.signature_name, merged)
            except Exception:  # rerun one by one: only the bad request should fail
                outputs = None
            if outputs is not None and all(len(v) == rows for v in outputs.values()):
                start = 0
                for task in batch:
                    task.finish({k: v[start:start + task.rows] for k, v in outputs.items()})
                    start += task.rows
                return
        for task in batch:
            try:
                task.finish(task.servable.call(task.signature_name, task.arrays))
            except ServingError as e:
                task.finish(error=e)
            except Exception as e:  # never leave a request thread waiting
                task.finish(error=ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"))
