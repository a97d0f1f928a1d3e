"""The versions a server has loaded: version policies, labels, states, and what a reload changes.

Mirrors TF Serving's manager with its availability-preserving policy. Each poll, a model's policy
chooses versions from its base path (`latest N`, `all`, `specific`); a chosen version is loaded and
warmed up (assets.extra/tf_serving_warmup_requests) before requests see it, and a version no longer
chosen is unloaded only once some chosen version is available, so a model never drops to nothing
while it has something to serve. Every version seen keeps a state (START, LOADING, AVAILABLE,
UNLOADING, END). One that failed to load stays END with its error and is tried again only when its
files change, so a broken version costs one log entry, not one per poll. Requests holding an
unloaded version finish on it. A base path with no version yet is polled like any other: the server says so
(TF Serving's "No versions of servable ... found under base path", at most every NO_VERSIONS_LOG_SECONDS,
not at every poll) and serves the first version that appears.
"""

import dataclasses
import logging
import os
import threading
import time

import grpc

from pipeline.core import files
from pipeline.core.publish import list_versions
from serving.model_config import ModelConfig
from serving.monitoring import Metrics
from serving.servables import Servable, ServingError

log = logging.getLogger(__name__)
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
NO_VERSIONS_LOG_SECONDS = 600.0


@dataclasses.dataclass
class VersionState:
    state: str
    error: str = ""  # why it failed to load (state END)
    failed_files: tuple | None = None  # its files when it failed: it is retried once they differ


class _Model:
    def __init__(self, config: ModelConfig):
        self.config = config
        self.states: dict[int, VersionState] = {}
        self.available: dict[int, Servable] = {}
        self.labels: dict[str, int] = {}
        self.said_empty_at: float | None = None  # when "no versions" was last logged (None: has versions)


class ModelManager:
    """Loads the versions each model's policy chooses; answers which servable a request gets."""

    def __init__(self, models: list[ModelConfig], allow_labels_for_unavailable: bool = False,
                 metrics: Metrics | None = None):
        self.metrics = metrics or Metrics()
        self._allow_labels_for_unavailable = allow_labels_for_unavailable
        self._models = {m.name: _Model(m) for m in models}
        self._lock = threading.Lock()  # guards what requests read: available versions and labels
        self._poll_lock = threading.Lock()  # one poll or reload at a time
        self._stop = threading.Event()

    # ---- loading and unloading -------------------------------------------------------------------
    def poll(self) -> None:
        """Brings every model to what its policy chooses from its base path now."""
        with self._poll_lock:
            for model in list(self._models.values()):
                self._poll_model(model)

    def _poll_model(self, model: _Model) -> None:
        found = list_versions(model.config.base_path)
        self._say_if_empty(model, found)
        chosen = model.config.policy.choose(found)
        to_load = [v for v in chosen if v not in model.available and self._should_try(model, v)]
        for version in to_load:
            model.states[version] = VersionState(START)
        for version in sorted(to_load, reverse=True):  # the newest first: it serves soonest
            self._load(model, version)
        if any(v in model.available for v in chosen):
            for version in [v for v in model.available if v not in chosen]:
                self._unload(model, version)

    @staticmethod
    def _say_if_empty(model: _Model, found: list[int]) -> None:
        """Logs that a base path holds no version yet: once, then every NO_VERSIONS_LOG_SECONDS while it stays so."""
        if found:
            model.said_empty_at = None
            return
        now = time.monotonic()
        if model.said_empty_at is None or now - model.said_empty_at >= NO_VERSIONS_LOG_SECONDS:
            model.said_empty_at = now
            log.warning("No versions of servable %s found under base path %s; serving it once one appears "
                        "(an integer version directory holding saved_model.pb)", model.config.name,
                        model.config.base_path)

    def has_versions(self, name: str) -> bool:
        """Whether the model's base path held any version directory at the last poll."""
        return self._models[name].said_empty_at is None

    def _should_try(self, model: _Model, version: int) -> bool:
        state = model.states.get(version)
        if state is None or state.failed_files is None:
            return True
        path = os.path.join(model.config.base_path, str(version))
        try:
            return files.tree_state(path) != state.failed_files
        except Exception:  # the directory went away while we looked: the next poll sees
            return False

    def _load(self, model: _Model, version: int) -> None:
        name, path = model.config.name, os.path.join(model.config.base_path, str(version))
        model.states[version] = VersionState(LOADING)
        started = time.perf_counter()
        try:
            seen = files.tree_state(path)  # what it was when tried: tried again once it differs
        except Exception:
            seen = ()
        try:
            servable = Servable(name, version, path)
            warmed = servable.warm_up()
        except Exception as e:  # a broken version must not take the served ones down
            model.states[version] = VersionState(END, f"{type(e).__name__}: {e}", seen)
            self.metrics.load(name, version, False, time.perf_counter() - started)
            log.error("model %s: version %d failed to load (tried again when its files change); serving %s",
                      name, version, sorted(model.available) or "nothing", exc_info=True)
            return
        with self._lock:
            model.available[version] = servable
        model.states[version] = VersionState(AVAILABLE)
        self.metrics.load(name, version, True, time.perf_counter() - started)
        log.info("model %s: version %d available (warm-up requests: %d%s)", name, version, warmed,
                 f"; SIDs from content embeddings by RQ-VAE {servable.rqvae_version}" if servable.rqvae_version else "")

    def _unload(self, model: _Model, version: int) -> None:
        model.states[version] = VersionState(UNLOADING)
        with self._lock:
            model.available.pop(version, None)  # requests holding it finish on it
        model.states[version] = VersionState(END)
        self.metrics.unload(model.config.name, version)
        log.info("model %s: version %d unloaded", model.config.name, version)

    def start_polling(self, interval_seconds: float) -> threading.Thread:
        def loop():
            failing = None
            while not self._stop.wait(interval_seconds):
                try:
                    self.poll()
                    failing = None
                except Exception as e:  # e.g. a base path unreadable for a while: keep serving, keep polling
                    if repr(e) != failing:
                        log.exception("polling the base paths failed; still serving what is loaded")
                    failing = repr(e)

        thread = threading.Thread(target=loop, name="version-poll", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    # ---- labels and reloads ----------------------------------------------------------------------
    def apply_labels(self) -> None:
        """Sets every model's labels from its config (checked as a reload checks them)."""
        with self._poll_lock:
            labels = self._checked_labels({name: m.config for name, m in self._models.items()})
            with self._lock:
                for name, model in self._models.items():
                    model.labels = labels[name]

    def _checked_labels(self, configs: dict[str, ModelConfig]) -> dict[str, dict[str, int]]:
        """TF Serving's rule: a label names an AVAILABLE version; with allow_labels_for_unavailable, a label
        that is new (or keeps its version) may name one that is not available yet."""
        out = {}
        for name, config in configs.items():
            model = self._models.get(name)
            for label, version in config.labels:
                existing = model.labels.get(label) if model else None
                may_wait = self._allow_labels_for_unavailable and existing in (None, version)
                if not may_wait and (model is None or version not in model.available):
                    raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"Request to assign label to version {version} of model {name}, which is "
                                       "not currently available for inference")
            out[name] = config.label_map
        return out

    def reload(self, configs: list[ModelConfig]) -> None:
        """TF Serving's ReloadConfig: the new model list replaces the old, all or nothing.

        New models are loaded before it returns (it fails if one has no version to serve); changed
        policies take effect at the next poll; labels are checked against what is available now, so a
        version is loaded by one reload and labelled by the next; models left out are unloaded.
        """
        with self._poll_lock:
            by_name = {c.name: c for c in configs}
            for name, config in by_name.items():
                old = self._models.get(name)
                if old is not None and old.config.base_path != config.base_path:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"model {name}: base_path cannot change in a reload ({old.config.base_path} "
                                       f"to {config.base_path}); serve it under a new name")
            added = {name: _Model(c) for name, c in by_name.items() if name not in self._models}
            for model in added.values():
                self._poll_model(model)
                if not model.available:
                    errors = "; ".join(f"version {v}: {s.error}" for v, s in sorted(model.states.items()) if s.error)
                    raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"model {model.config.name}: no version of {model.config.base_path} could be "
                                       f"loaded{': ' + errors if errors else ''}")
            with self._lock:
                self._models.update(added)
            try:
                labels = self._checked_labels(by_name)
            except ServingError:
                with self._lock:
                    for name in added:
                        del self._models[name]
                raise
            removed = [m for name, m in self._models.items() if name not in by_name]
            with self._lock:
                for name, config in by_name.items():
                    self._models[name].config = config
                    self._models[name].labels = labels[name]
                for model in removed:
                    del self._models[model.config.name]
            for model in removed:
                for version in list(model.available):
                    self._unload(model, version)
            log.info("config reloaded: %s", "; ".join(
                f"{c.name} ({c.policy.describe()}{', labels ' + str(c.label_map) if c.labels else ''})"
                for c in configs))

    # ---- what requests get -----------------------------------------------------------------------
    def servable(self, name: str, version: int | None = None, label: str = "") -> Servable:
        """The servable a request names: a version, a label, or (neither) the newest available."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name}): "
                                   f"no model named '{name}' is configured")
            if label:
                if label not in model.labels:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"Unrecognized servable version label: {label}")
                version = model.labels[label]
            if version is None:
                if not model.available:
                    raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
                return model.available[max(model.available)]
            servable = model.available.get(version)
        if servable is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({name}, "
                               f"{version}){f' (label {label})' if label else ''}: the versions available are "
                               f"{sorted(model.available)}")
        return servable

    def statuses(self, name: str, version: int | None = None) -> list[tuple[int, VersionState]]:
        """(version, state) of every version of a model the server has seen, newest first (TF Serving's order)."""
        model = self._models.get(name)
        if model is None or not model.states:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        if version is not None and version not in model.states:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
        return [(v, dataclasses.replace(s)) for v, s in sorted(model.states.items(), reverse=True)
                if version in (None, v)]

    def label_version(self, name: str, label: str) -> int:
        model = self._models.get(name)
        if model is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        if label not in model.labels:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
        return model.labels[label]

    def model_names(self) -> list[str]:
        return sorted(self._models)
