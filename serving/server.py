"""A gRPC server that speaks TF Serving's protocol (tensorflow-serving-api) over the daily exports.

PredictionService: Predict (batched across concurrent requests with --enable_batching) and
GetModelMetadata (Classify, Regress and MultiInference answer INVALID_ARGUMENT, as TF Serving does
for signatures that are not classify/regress ones); ModelService: GetModelStatus. Any TF Serving client works against it unchanged, and the stock
`tensorflow_model_server` can serve the same base path instead:

  sidrec serve --model_name ranker --model_base_path RUN/ranker/sid_spm_8192-*/export --port 8500
  tensorflow_model_server --model_name=ranker --model_base_path=$PWD/RUN/ranker/sid_spm_8192-*/export --port=8500
"""

import argparse
import logging
import signal
import threading
from concurrent import futures

import grpc
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from pipeline.core import config_flags
from serving.batching import Batcher, BatchingParameters
from serving.servables import (ModelConfig, ModelManager, ServingError, filter_outputs, outputs_to_protos,
                               read_model_config_file)

log = logging.getLogger(__name__)
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_CONCURRENT_RPCS = 64


def _handle(fn):
    """Turns ServingError into the gRPC status TF Serving would send; the server keeps serving."""

    def wrapper(self, request, context):
        try:
            return fn(self, request, context)
        except ServingError as e:
            context.abort(e.code, str(e))

    return wrapper


def _version(model_spec) -> int | None:
    if model_spec.HasField("version"):
        return model_spec.version.value
    if model_spec.version_label:
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"version_label '{model_spec.version_label}': this server "
                           "assigns no labels; ask for a version number or the latest")
    return None


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager, batcher: Batcher | None = None):
        self._manager = manager
        self._batcher = batcher

    @_handle
    def Predict(self, request, context):
        servable = self._manager.servable(request.model_spec.name, _version(request.model_spec))
        signature_name, arrays = servable.prepare(request.model_spec.signature_name, dict(request.inputs),
                                                  tuple(request.output_filter))
        outputs = (self._batcher.run(servable, signature_name, arrays) if self._batcher
                   else servable.call(signature_name, arrays))
        outputs = filter_outputs(outputs, tuple(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for key, proto in outputs_to_protos(outputs).items():
            response.outputs[key].CopyFrom(proto)
        return response

    @_handle
    def GetModelMetadata(self, request, context):
        servable = self._manager.servable(request.model_spec.name, _version(request.model_spec))
        unknown = set(request.metadata_field) - {"signature_def"}
        if unknown or not request.metadata_field:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "metadata_field must be ['signature_def'], got "
                               f"{list(request.metadata_field)}")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in servable.signature_defs.items():
            signatures.signature_def[name].CopyFrom(signature_def)
        response.metadata["signature_def"].Pack(signatures)
        return response

    def _not_a_classify_or_regress_signature(self, request, method: str):
        servable = self._manager.servable(request.model_spec.name, _version(request.model_spec))
        name = request.model_spec.signature_name or "serving_default"
        method_name = servable.signature_defs[name].method_name if name in servable.signature_defs else None
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Expected {method} signature method_name to be tensorflow/serving/{method}. Was: "
                           f"{method_name}: call Predict on '{name}'")

    @_handle
    def Classify(self, request, context):
        self._not_a_classify_or_regress_signature(request, "classify")

    @_handle
    def Regress(self, request, context):
        self._not_a_classify_or_regress_signature(request, "regress")

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "MultiInference needs classify or regress signatures; "
                      "these exports have predict signatures: call Predict")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager):
        self._manager = manager

    @_handle
    def GetModelStatus(self, request, context):
        version = _version(request.model_spec)
        states = [(v, s) for v, s in self._manager.statuses(request.model_spec.name) if version in (None, v)]
        if not states:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model "
                               f"{request.model_spec.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for v, state in states:
            status = response.model_version_status.add()
            status.version = v
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
        return response

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "reloading the config over RPC is not supported: restart "
                      "with the new --model_config_file")


def build_server(manager: ModelManager, host: str, port: int, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS, workers: int = 8,
                 batching: BatchingParameters | None = None) -> tuple[grpc.Server, int]:
    """A gRPC server with both services (Predict batched if `batching`); returns it (not started) and its port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), maximum_concurrent_rpcs=max_concurrent_rpcs,
                         options=[("grpc.max_receive_message_length", max_request_bytes)])
    batcher = Batcher(batching) if batching else None
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(manager, batcher), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    return server, bound


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_name", default="ranker", help="the model name clients ask for")
    parser.add_argument("--model_base_path", default="", help="directory of integer version directories")
    parser.add_argument("--model_config_file", default="",
                        help="text-format ModelServerConfig with a model_config_list (instead of the two above)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (0: any free port, printed)")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="how often to look for new versions")
    parser.add_argument("--max_request_bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                        help="larger requests get RESOURCE_EXHAUSTED")
    parser.add_argument("--max_concurrent_rpcs", type=int, default=DEFAULT_MAX_CONCURRENT_RPCS,
                        help="more concurrent requests get RESOURCE_EXHAUSTED")
    parser.add_argument("--enable_batching", action="store_true",
                        help="run concurrent Predict requests as one batched call (the flags below)")
    config_flags.add_flags(parser, BatchingParameters)


def start(models: list[ModelConfig], host: str = "127.0.0.1", port: int = 0, poll_seconds: float = 1.0,
          max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
          max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS,
          batching: BatchingParameters | None = None) -> tuple[grpc.Server, ModelManager, int]:
    """Loads the newest version of every model, starts serving and polling; returns (server, manager, port)."""
    manager = ModelManager(models)
    manager.poll()
    for m in models:  # fail at start, not on every request
        try:
            manager.servable(m.name)
        except ServingError as e:
            raise ValueError(f"model {m.name}: no loadable integer version directory under {m.base_path} ({e})") from None
    server, bound = build_server(manager, host, port, max_request_bytes, max_concurrent_rpcs, batching=batching)
    server.start()
    manager.start_polling(poll_seconds)
    return server, manager, bound


def serve(args) -> None:
    """Serves until SIGINT/SIGTERM, after printing `listening on HOST:PORT`."""
    if args.model_config_file:
        models = read_model_config_file(args.model_config_file)
    elif args.model_base_path:
        models = [ModelConfig(args.model_name, args.model_base_path)]
    else:
        raise ValueError("give --model_base_path (with --model_name) or --model_config_file")
    batching = config_flags.from_args(BatchingParameters, args) if args.enable_batching else None
    server, manager, port = start(models, args.host, args.port, args.file_system_poll_wait_seconds,
                                  args.max_request_bytes, args.max_concurrent_rpcs, batching)
    if batching:
        print(f"batching Predict requests: up to {batching.max_batch_size} rows a call, waiting up to "
              f"{batching.batch_timeout_micros} us, {batching.num_batch_threads} batch threads", flush=True)
    print(f"listening on {args.host}:{port}", flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    manager.stop()
    server.stop(grace=2).wait()
