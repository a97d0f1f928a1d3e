"""`sidrec serve`: TF Serving's gRPC API (and, with --rest_api_port, its REST API) over versioned exports.

PredictionService: Predict (batched across concurrent requests with --enable_batching) and
GetModelMetadata (Classify, Regress and MultiInference answer INVALID_ARGUMENT, as TF Serving does
for signatures that are not classify/regress ones); ModelService: GetModelStatus and
HandleReloadConfigRequest. Models, version policies and labels come from --model_config_file (TF
Serving's model_config_list) or --model_name/--model_base_path (the newest version). Any TF Serving
client works against it unchanged, and the stock `tensorflow_model_server` can serve the same base
paths with the same flags and files:

  sidrec serve --model_name ranker --model_base_path RUN/serving/ranker --port 8500 --rest_api_port 8501
  tensorflow_model_server --model_name=ranker --model_base_path=$PWD/RUN/serving/ranker --port=8500 --rest_api_port=8501
"""

import dataclasses
import logging
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc

from pipeline.core import config_flags, files
from pipeline.core.configs import (DEFAULT_MAX_CONCURRENT_RPCS, DEFAULT_MAX_REQUEST_BYTES, REST_MAX_CONNECTIONS,
                                   REST_NUM_THREADS, REST_TIMEOUT_MS, BatchingParameters)
from serving import model_config
from serving.batching import Batcher, read_batching_parameters_file
from serving.core import ServingCore, error_code
from serving.manager import ModelManager
from serving.model_config import ModelConfig
from serving.monitoring import read_monitoring_config
from serving.rest import RestServer
from serving.servables import ServingError

log = logging.getLogger(__name__)
# Seconds in-flight requests get to finish after SIGINT/SIGTERM.
STOP_GRACE_SECONDS = 2


def _handle(fn):
    """Turns ServingError into the gRPC status TF Serving would send; the server keeps serving."""

    def wrapper(self, request, context):
        try:
            return fn(self, request, context)
        except ServingError as e:
            context.abort(e.code, str(e))

    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore):
        self._core = core

    def _metered(self, api: str, request, work):
        with self._core.metrics.request(request.model_spec.name, api, "GRPC") as answer:
            return work(answer)

    @_handle
    def Predict(self, request, context):
        return self._metered("predict", request, lambda answer: self._core.predict(request, answer))

    @_handle
    def GetModelMetadata(self, request, context):
        return self._metered("get_model_metadata", request, lambda answer: self._core.metadata(request, answer))

    @_handle
    def Classify(self, request, context):
        self._metered("classify", request, lambda a: self._core.not_classify_or_regress(request, "classify", a))

    @_handle
    def Regress(self, request, context):
        self._metered("regress", request, lambda a: self._core.not_classify_or_regress(request, "regress", a))

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "MultiInference needs classify or regress signatures; "
                      "these exports have predict signatures: call Predict")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore):
        self._core = core

    @_handle
    def GetModelStatus(self, request, context):
        return self._core.status(request)

    def HandleReloadConfigRequest(self, request, context):
        """TF Serving answers a refused config both ways: the RPC's status and the response's status."""
        try:
            return self._core.reload_config(request)
        except ServingError as e:
            log.error("ReloadConfig refused: %s", e)
            context.set_code(e.code)
            context.set_details(str(e))
            response = model_management_pb2.ReloadConfigResponse()
            response.status.error_code = error_code(e.code)
            response.status.error_message = str(e)
            return response


def build_server(core: ServingCore, host: str, port: int, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS, workers: int = 8) -> tuple[grpc.Server, int]:
    """A gRPC server with both services; returns it (not started) and its port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), maximum_concurrent_rpcs=max_concurrent_rpcs,
                         options=[("grpc.max_receive_message_length", max_request_bytes)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    return server, bound


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 0  # gRPC; 0: any free port
    rest_api_port: int | None = None  # None: no REST API; 0: any free port
    poll_seconds: float = 1.0
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    batching: BatchingParameters | None = None
    allow_version_labels_for_unavailable_models: bool = False
    prometheus_path: str | None = None  # on the REST port
    rest_api_num_threads: int = REST_NUM_THREADS
    rest_api_timeout_in_ms: int = REST_TIMEOUT_MS
    rest_api_max_connections: int = REST_MAX_CONNECTIONS


@dataclasses.dataclass
class ModelServer:
    """A running server: its ports, its manager (what is loaded) and how to stop it."""

    grpc_server: grpc.Server
    manager: ModelManager
    port: int
    rest: RestServer | None = None

    @property
    def rest_port(self) -> int | None:
        return self.rest.port if self.rest else None

    def stop(self, grace: float = 1.0) -> None:
        self.manager.stop()
        if self.rest:
            self.rest.stop()
        self.grpc_server.stop(grace=grace).wait()


def start(models: list[ModelConfig], options: ServerOptions = ServerOptions()) -> ModelServer:
    """Loads what every model's policy chooses, sets its labels, starts serving and polling."""
    if options.prometheus_path and options.rest_api_port is None:
        raise ValueError("--monitoring_config_file: the Prometheus page is served on the REST port; give --rest_api_port")
    manager = ModelManager(models, options.allow_version_labels_for_unavailable_models)
    manager.poll()
    for m in models:  # versions that are there but do not load fail at start, not on every request
        if not manager.has_versions(m.name):
            continue  # none yet (a lineage still to publish its first): polled, served once one appears
        try:
            manager.servable(m.name)
        except ServingError as e:
            raise ValueError(f"model {m.name}: no loadable integer version directory under {m.base_path} ({e})") from None
    try:
        manager.apply_labels()
    except ServingError as e:
        raise ValueError(f"version_labels: {e} (--allow_version_labels_for_unavailable_models lets a new label "
                         "name a version that is still to load)") from None
    core = ServingCore(manager, Batcher(options.batching, manager.metrics) if options.batching else None)
    grpc_server, port = build_server(core, options.host, options.port, options.max_request_bytes,
                                     options.max_concurrent_rpcs)
    rest_api = None
    if options.rest_api_port is not None:
        rest_api = RestServer(core, options.host, options.rest_api_port, options.max_request_bytes,
                              options.max_concurrent_rpcs, options.prometheus_path, options.rest_api_num_threads,
                              options.rest_api_timeout_in_ms, options.rest_api_max_connections)
    grpc_server.start()
    if rest_api:
        rest_api.start()
    manager.start_polling(options.poll_seconds)
    return ModelServer(grpc_server, manager, port, rest_api)


def _models(args) -> list[ModelConfig]:
    if args.model_config_file:
        return model_config.read_model_config_file(args.model_config_file)
    if args.model_base_path:
        return [ModelConfig(args.model_name, args.model_base_path)]
    raise ValueError("give --model_base_path (with --model_name) or --model_config_file")


def _options(args) -> ServerOptions:
    batching = None
    if args.batching_parameters_file and not args.enable_batching:
        raise ValueError("--batching_parameters_file takes effect with --enable_batching; give both")
    if args.enable_batching:
        batching = config_flags.from_args(BatchingParameters, args)
        if args.batching_parameters_file:
            batching = read_batching_parameters_file(args.batching_parameters_file, batching)
    prometheus = read_monitoring_config(args.monitoring_config_file) if args.monitoring_config_file else None
    rest_port = None if args.rest_api_port == 0 else max(args.rest_api_port, 0)
    return ServerOptions(args.host, args.port, rest_port, args.file_system_poll_wait_seconds, args.max_request_bytes,
                         args.max_concurrent_rpcs, batching, args.allow_version_labels_for_unavailable_models,
                         prometheus, args.rest_api_num_threads, args.rest_api_timeout_in_ms,
                         args.rest_api_max_connections)


def _watch_config_file(path: str, seconds: float, manager: ModelManager, stopped: threading.Event) -> None:
    """Rereads the config file every `seconds`; a changed one is applied as ReloadConfig applies it."""
    applied = files.read_text(path)

    def loop():
        nonlocal applied
        while not stopped.wait(seconds):
            try:
                text = files.read_text(path)
                if text == applied:
                    continue
                applied = text  # a refused config is logged once, not every poll
                manager.reload(model_config.parse(text, path))
            except (ValueError, ServingError) as e:
                log.error("%s: not applied: %s", path, e)

    threading.Thread(target=loop, name="config-poll", daemon=True).start()


def serve(args) -> None:
    """Serves until SIGINT/SIGTERM, after printing `listening on HOST:PORT` (and `REST API on HOST:PORT`)."""
    options = _options(args)
    running = start(_models(args), options)
    if options.batching:
        b = options.batching
        print(f"batching Predict requests: up to {b.max_batch_size} rows a call, waiting up to "
              f"{b.batch_timeout_micros} us, {b.num_batch_threads} batch threads", flush=True)
    if running.rest:
        print(f"REST API on {args.host}:{running.rest_port}"
              + (f"; Prometheus metrics at {options.prometheus_path}" if options.prometheus_path else ""), flush=True)
    stopped = threading.Event()
    if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
        _watch_config_file(args.model_config_file, args.model_config_file_poll_wait_seconds, running.manager, stopped)
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the line a supervisor waits for
        signal.signal(sig, lambda *_: stopped.set())
    print(f"listening on {args.host}:{running.port}", flush=True)
    stopped.wait()
    # A bounded exit: in-flight requests get the grace period, then the process ends even if a request thread or
    # the interpreter's teardown of TensorFlow and gRPC threads hangs (seen once in ~400 stops under load).
    stopping = threading.Thread(target=running.stop, kwargs={"grace": STOP_GRACE_SECONDS}, daemon=True)
    stopping.start()
    stopping.join(timeout=STOP_GRACE_SECONDS + 10)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
