"""TF Serving's REST API (--rest_api_port), and the Prometheus page on the same port.

  POST /v1/models/NAME[/versions/N | /labels/L]:predict     (also :classify, :regress)
  GET  /v1/models/NAME[/versions/N | /labels/L]             model status
  GET  /v1/models/NAME[/versions/N | /labels/L]/metadata    signatures
  GET  /monitoring/prometheus/metrics                       with --monitoring_config_file

Bodies are TF Serving's JSON (serving/json_tensors.py); an error is `{"error": "..."}` with the HTTP
code TF Serving maps its status code to (INVALID_ARGUMENT 400, NOT_FOUND 404, ...). A body larger
than --max_request_bytes gets 413, its bytes read and dropped (never held); more concurrent requests than
--max_concurrent_rpcs get 429. The transport (serving/http_server.py) answers on --rest_api_num_threads
threads and closes a request not read and answered within --rest_api_timeout_in_ms, as TF Serving does.
"""

import json
import logging
import re
import threading

import grpc
from google.protobuf import json_format
from pipeline.core.tf_env import tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2, predict_pb2,
                                     regression_pb2)

from serving import json_tensors
from pipeline.core.configs import REST_MAX_CONNECTIONS, REST_NUM_THREADS, REST_TIMEOUT_MS
from serving.core import ServingCore
from serving.http_server import HttpServer
from serving.servables import ServingError

log = logging.getLogger(__name__)

# TF Serving's http_server.cc: status code -> HTTP code.
HTTP_CODES = {"OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
              "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
              "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
              "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401}
_SPEC = r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?"
_PREDICTION = re.compile(_SPEC + r":(classify|regress|predict)", re.IGNORECASE)
_STATUS = re.compile(_SPEC + r"(/metadata)?", re.IGNORECASE)


def _spec(message, match) -> None:
    message.model_spec.name = match.group(1)
    if match.group(2):
        message.model_spec.version.value = int(match.group(2))
    elif match.group(3):
        message.model_spec.version_label = match.group(3)


def _to_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


class RestServer:
    """Serves the REST API from its own threads until `stop()`."""

    def __init__(self, core: ServingCore, host: str, port: int, max_request_bytes: int, max_concurrent: int,
                 prometheus_path: str | None = None, num_threads: int = REST_NUM_THREADS,
                 timeout_ms: int = REST_TIMEOUT_MS, max_connections: int = REST_MAX_CONNECTIONS):
        self.core, self.prometheus_path = core, prometheus_path
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._http = HttpServer(self._admitted, host, port, num_threads, timeout_ms / 1000, max_request_bytes,
                                max_connections)
        self.port = self._http.port

    def start(self) -> "RestServer":
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def _admitted(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        if not self._slots.acquire(blocking=False):
            return HTTP_CODES["RESOURCE_EXHAUSTED"], json.dumps(
                {"error": "too many concurrent requests (--max_concurrent_rpcs)"}).encode(), "application/json"
        try:
            return self.handle(method, path, body)
        finally:
            self._slots.release()

    # ---- one request: (HTTP code, body) ----------------------------------------------------------
    def handle(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes, str]:
        if method == "GET" and self.prometheus_path and path == self.prometheus_path:
            return 200, self.core.metrics.page().encode(), "text/plain; version=0.0.4"
        try:
            return 200, self._route(method, path, body or b""), "application/json"
        except ServingError as e:
            return HTTP_CODES[e.code.name], json.dumps({"error": str(e)}).encode(), "application/json"
        except Exception as e:  # a bug answers 500 with what it was; the server keeps serving
            log.exception("REST %s %s failed", method, path)
            return 500, json.dumps({"error": f"{type(e).__name__}: {e}"}).encode(), "application/json"

    def _route(self, method: str, path: str, body: bytes) -> bytes:
        prediction, status = _PREDICTION.fullmatch(path), _STATUS.fullmatch(path)
        if method == "POST" and prediction:
            return self._prediction(prediction, body)
        if method == "GET" and status:
            return self._metadata(status) if status.group(4) else self._status(status)
        if method == "GET" and path.lower().rstrip("/") == "/v1/models":
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
        code = grpc.StatusCode.INVALID_ARGUMENT if path.lower().startswith("/v1/") else grpc.StatusCode.NOT_FOUND
        raise ServingError(code, f"Malformed request: {method} {path}")

    def _prediction(self, match, body: bytes) -> bytes:
        api = match.group(4).lower()
        with self.core.metrics.request(match.group(1), api, "REST") as answer:
            parsed = json_tensors.parse_body(body)
            if api != "predict":  # these exports have no classify or regress signature: TF Serving's answer
                request = (classification_pb2.ClassificationRequest() if api == "classify"
                           else regression_pb2.RegressionRequest())
                _spec(request, match)
                request.model_spec.signature_name = str(parsed.get("signature_name", ""))
                self.core.not_classify_or_regress(request, api, answer)
            request = predict_pb2.PredictRequest()
            _spec(request, match)

            def inputs_of(signature_name: str) -> dict:
                servable = self.core.servable(request.model_spec)
                signature = servable.signature_defs.get(signature_name or "serving_default")
                if signature is None:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Serving signature name: "
                                       f"\"{signature_name}\" not found in signature def")
                return dict(signature.inputs)

            fmt = json_tensors.fill_predict_request(parsed, inputs_of, request)
            response = self.core.predict(request, answer)
            outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
            return json_tensors.body_from_outputs(outputs, fmt)

    def _status(self, match) -> bytes:
        request = get_model_status_pb2.GetModelStatusRequest()
        _spec(request, match)
        return json.dumps(_to_json(self.core.status(request)), indent=1).encode()

    def _metadata(self, match) -> bytes:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        _spec(request, match)
        with self.core.metrics.request(request.model_spec.name, "get_model_metadata", "REST") as answer:
            response = self.core.metadata(request, answer)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return json.dumps({"model_spec": _to_json(response.model_spec),
                           "metadata": {"signature_def": _to_json(signatures)}}, indent=1).encode()
