"""TF Serving's REST API (--rest_api_port), and the Prometheus page on the same port.

  POST /v1/models/NAME[/versions/N | /labels/L]:predict     (also :classify, :regress)
  GET  /v1/models/NAME[/versions/N | /labels/L]             model status
  GET  /v1/models/NAME[/versions/N | /labels/L]/metadata    signatures
  GET  /monitoring/prometheus/metrics                       with --monitoring_config_file

Bodies are TF Serving's JSON (serving/json_tensors.py); an error is `{"error": "..."}` with the HTTP
code TF Serving maps its status code to (INVALID_ARGUMENT 400, NOT_FOUND 404, ...). A body larger
than --max_request_bytes gets 413, its bytes read and dropped (never held); more concurrent requests than
--max_concurrent_rpcs get 429.
"""

import http.server
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
from serving.core import ServingCore
from serving.servables import ServingError

log = logging.getLogger(__name__)

# TF Serving's http_server.cc: status code -> HTTP code.
HTTP_CODES = {"OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
              "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
              "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
              "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401}
_DRAIN_FACTOR = 16  # bodies up to this many times the limit are read and dropped before the 413; larger: closed
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
                 prometheus_path: str | None = None):
        self.core, self.max_request_bytes, self.prometheus_path = core, max_request_bytes, prometheus_path
        self._slots = threading.BoundedSemaphore(max_concurrent)
        owner = self

        class Handler(_Handler):
            server_owner = owner

        try:
            self._http = http.server.ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise OSError(f"could not bind {host}:{port} for the REST API ({e.strerror})") from None
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, name="rest-api", daemon=True)

    def start(self) -> "RestServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

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


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    disable_nagle_algorithm = True  # else a small reply waits ~40 ms on the client's delayed ACK
    server_owner: RestServer

    def do_GET(self):
        self._answer("GET")

    def do_POST(self):
        self._answer("POST")

    def _answer(self, method: str) -> None:
        owner = self.server_owner
        path = self.path.split("?", 1)[0]
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True  # the body cannot be delimited
            return self._reply(400, json.dumps({"error": "Content-Length must be a number of bytes, got "
                                                         f"{self.headers.get('Content-Length')!r}"}).encode())
        if length > owner.max_request_bytes:
            if length <= _DRAIN_FACTOR * owner.max_request_bytes:
                self._discard(length)  # read, not kept: the client gets its answer, not a broken pipe
            else:
                self.close_connection = True
            return self._reply(413, json.dumps({"error": f"request of {length} bytes is larger than "
                                                         f"--max_request_bytes {owner.max_request_bytes}"}).encode())
        body = self.rfile.read(length) if length else b""
        if not owner._slots.acquire(blocking=False):
            return self._reply(HTTP_CODES["RESOURCE_EXHAUSTED"], json.dumps(
                {"error": "too many concurrent requests (--max_concurrent_rpcs)"}).encode())
        try:
            code, payload, content_type = owner.handle(method, path, body)
        finally:
            owner._slots.release()
        self._reply(code, payload, content_type)

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)

    def _reply(self, code: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):  # requests are counted in the metrics, not logged one by one
        pass
