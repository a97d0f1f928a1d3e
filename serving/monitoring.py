"""The server's metrics, and their Prometheus text page (TF Serving's --monitoring_config_file).

Metric names follow TF Serving's exporter (`:tensorflow:serving:request_count`, ...), so dashboards
built for the stock server find them; labels add the version a request was answered by:

  :tensorflow:serving:request_count{model_name,model_version,API,entrypoint,status}   counter
  :tensorflow:serving:request_latency{model_name,model_version,API,entrypoint}         histogram, microseconds
  :tensorflow:serving:batching_session:processed_batch_size{model_name,model_version} histogram, rows
  :tensorflow:serving:model_load_count{model_name,model_version,status}               counter (success, fail)
  :tensorflow:serving:model_load_latency{model_name,model_version}                    histogram, microseconds
  :tensorflow:serving:model_unload_count{model_name,model_version}                    counter
"""

import bisect
import contextlib
import threading
import time

from google.protobuf import text_format

from pipeline.core import files
from serving.config_protos import MonitoringConfig

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
_LATENCY_BUCKETS = tuple(10 * 1.8 ** i for i in range(33))  # 10 us .. ~2.6e9 us, TF Serving's exponential buckets
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


class _Family:
    def __init__(self, name: str, kind: str, help_text: str, buckets: tuple = ()):
        self.name, self.kind, self.help, self.buckets = name, kind, help_text, buckets
        self.series: dict[tuple, list] = {}  # labels -> [count] or [bucket counts..., sum, count]

    def add(self, labels: tuple, value: float = 1.0) -> None:
        if self.kind == "counter":
            self.series.setdefault(labels, [0.0])[0] += value
            return
        cells = self.series.setdefault(labels, [0] * len(self.buckets) + [0.0, 0])
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.buckets):
            cells[index] += 1
        cells[-2] += value
        cells[-1] += 1

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, cells in sorted(self.series.items()):
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            if self.kind == "counter":
                out.append(f"{self.name}{{{text}}} {_number(cells[0])}")
                continue
            cumulative = 0
            for bound, count in zip(self.buckets, cells):
                cumulative += count
                out.append(f'{self.name}_bucket{{{text},le="{_number(bound)}"}} {cumulative}')
            out.append(f'{self.name}_bucket{{{text},le="+Inf"}} {cells[-1]}')
            out.append(f"{self.name}_sum{{{text}}} {_number(cells[-2])}")
            out.append(f"{self.name}_count{{{text}}} {cells[-1]}")
        return out


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """Counters and histograms the server's parts record into; `page()` is their Prometheus text."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests = _Family(":tensorflow:serving:request_count", "counter",
                                 "Requests, by model, version, API, entry point and status code.")
        self._latency = _Family(":tensorflow:serving:request_latency", "histogram",
                                "Request latency in microseconds, by model, version, API and entry point.",
                                _LATENCY_BUCKETS)
        self._batch_sizes = _Family(":tensorflow:serving:batching_session:processed_batch_size", "histogram",
                                    "Rows in each batched signature call.", _SIZE_BUCKETS)
        self._loads = _Family(":tensorflow:serving:model_load_count", "counter",
                              "Version loads, by model, version and outcome (success or fail).")
        self._load_latency = _Family(":tensorflow:serving:model_load_latency", "histogram",
                                     "Time to load and warm up a version, in microseconds.", _LATENCY_BUCKETS)
        self._unloads = _Family(":tensorflow:serving:model_unload_count", "counter", "Versions unloaded.")
        self._families = (self._requests, self._latency, self._batch_sizes, self._loads, self._load_latency,
                          self._unloads)

    @contextlib.contextmanager
    def request(self, model_name: str, api: str, entrypoint: str):
        """Times one request. The body sets `answer["version"]`; the status is the exception's code, or OK.

          with metrics.request("ranker", "predict", "GRPC") as answer:
              answer["version"] = servable.version
        """
        answer, started = {"version": "", "status": "OK"}, time.perf_counter()
        try:
            yield answer
        except Exception as e:
            code = getattr(e, "code", None)
            answer["status"] = code.name if code is not None else "INTERNAL"
            raise
        finally:
            micros = (time.perf_counter() - started) * 1e6
            base = (("model_name", model_name), ("model_version", str(answer["version"])), ("API", api),
                    ("entrypoint", entrypoint))
            with self._lock:
                self._requests.add(base + (("status", answer["status"]),))
                self._latency.add(base, micros)

    def batch(self, model_name: str, version: int, rows: int) -> None:
        with self._lock:
            self._batch_sizes.add((("model_name", model_name), ("model_version", str(version))), rows)

    def load(self, model_name: str, version: int, ok: bool, seconds: float) -> None:
        labels = (("model_name", model_name), ("model_version", str(version)))
        with self._lock:
            self._loads.add(labels + (("status", "success" if ok else "fail"),))
            self._load_latency.add(labels, seconds * 1e6)

    def unload(self, model_name: str, version: int) -> None:
        with self._lock:
            self._unloads.add((("model_name", model_name), ("model_version", str(version))))

    def page(self) -> str:
        with self._lock:
            return "\n".join(line for family in self._families if family.series for line in family.lines()) + "\n"


def read_monitoring_config(path: str) -> str | None:
    """The Prometheus path a --monitoring_config_file enables (None: disabled)."""
    try:
        config = text_format.Parse(files.read_text(path), MonitoringConfig())
    except text_format.ParseError as e:
        raise ValueError(f"{path}: not a text-format MonitoringConfig: {e}") from None
    if not config.prometheus_config.enable:
        return None
    path_ = config.prometheus_config.path or DEFAULT_PROMETHEUS_PATH
    if not path_.startswith("/"):
        raise ValueError(f"{path}: prometheus_config.path must start with '/', got '{path_}'")
    return path_
