"""TF Serving's REST API on `sidrec serve --rest_api_port`: the same answers as gRPC, TF Serving's error codes
and bodies, status and metadata, the Prometheus page, and the batching parameters file."""

import base64
import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from pipeline.core import features as fk
from pipeline.core.cards import read_serving_sample
from serving.batching import BatchingParameters, read_batching_parameters_file
from serving.client import RankerClient
from serving.monitoring import read_monitoring_config
from worlds import SMALL_WORLD, bad_embedding_requests, bad_sid_requests
from worlds import start_server as _start

OUTPUTS = (fk.CLICK_PROBABILITY, fk.ENGAGEMENT_PREDICTION)


@pytest.fixture(scope="module")
def served(spm_run, spm_ranker, tmp_path_factory):
    """A server with versions 1 and 2 (labels stable, canary), REST on, batching from a file, Prometheus on."""
    root = tmp_path_factory.mktemp("rest")
    shutil.copytree(spm_ranker["export"], root / "ranker")
    shutil.rmtree(root / "ranker" / "3")
    (root / "models.config").write_text(
        f'model_config_list {{ config {{ name: "ranker" base_path: "{root / "ranker"}" model_platform: "tensorflow"'
        ' model_version_policy { all {} } version_labels { key: "stable" value: 1 }'
        ' version_labels { key: "canary" value: 2 } } }\n')
    (root / "batching.config").write_text("max_batch_size { value: 512 }\nbatch_timeout_micros { value: 3000 }\n"
                                          'num_batch_threads { value: 1 }\nthread_pool_name { value: "ranker" }\n')
    (root / "monitoring.config").write_text("prometheus_config { enable: true }\n")
    printed = []
    process, target = _start("--model_config_file", str(root / "models.config"), "--rest_api_port", "-1",
                             "--max_request_bytes", "200000", "--enable_batching", "--batching_parameters_file",
                             str(root / "batching.config"), "--monitoring_config_file", str(root / "monitoring.config"),
                             printed=printed)
    yield {"root": root, "grpc": target, "rest": process.rest, "printed": printed,
           "sample": read_serving_sample(spm_run["output"])}
    process.terminate()
    process.wait(timeout=30)


def _call(served, path, body=None, raw: bytes | None = None):
    """(HTTP code, parsed JSON or text) of one REST call."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(f"http://{served['rest']}{path}", data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            code, text = response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        code, text = e.code, e.read().decode()
    try:
        return code, json.loads(text)
    except json.JSONDecodeError:
        return code, text


def _b64(records):
    return [{"b64": base64.b64encode(r).decode()} for r in records]


def test_rest_predict_equals_grpc_predict_in_every_form(served):
    sample = served["sample"][:12]
    grpc_client = RankerClient(served["grpc"])
    for path, grpc_args in [("/v1/models/ranker", {}), ("/v1/models/ranker/versions/1", {"version": 1}),
                            ("/v1/models/ranker/labels/stable", {"version_label": "stable"})]:
        expected, version = grpc_client.predict("ranker", sample, **grpc_args)
        assert version == (2 if not grpc_args else 1)  # stable names version 1, not the latest
        rows = [_call(served, path + ":predict", {"instances": _b64(sample)}),
                _call(served, path + ":predict", {"signature_name": "serving_default",
                                                  "instances": [{"examples": x} for x in _b64(sample)]})]
        columns = [_call(served, path + ":predict", {"inputs": _b64(sample)}),
                   _call(served, path + ":predict", {"inputs": {"examples": _b64(sample)}})]
        for code, body in rows:
            assert code == 200, body
            assert len(body["predictions"]) == len(sample)
            for key in OUTPUTS:  # float32 through JSON and back: the same numbers
                found = np.array([p[key] for p in body["predictions"]], np.float32)
                np.testing.assert_array_equal(found, expected[key])
        for code, body in columns:
            assert code == 200, body
            for key in OUTPUTS:
                np.testing.assert_array_equal(np.array(body["outputs"][key], np.float32), expected[key])


def test_rest_errors_carry_tf_servings_codes_and_messages(served):
    sample = served["sample"]
    good = {"instances": _b64(sample[:2])}
    cases = [
        ("unknown model", "/v1/models/nope:predict", good, None, 404, "nope"),
        ("unknown version", "/v1/models/ranker/versions/9:predict", good, None, 404, "Specific(ranker, 9)"),
        ("unknown label", "/v1/models/ranker/labels/beta:predict", good, None, 400,
         "Unrecognized servable version label: beta"),
        ("unknown signature", "/v1/models/ranker:predict", {"signature_name": "rank", **good}, None, 400, "rank"),
        ("not JSON", "/v1/models/ranker:predict", None, b"{instances", 400, "JSON Parse error"),
        ("neither key", "/v1/models/ranker:predict", {"examples": []}, None, 400, "Missing 'inputs' or 'instances' key"),
        ("both keys", "/v1/models/ranker:predict", {"instances": [], "inputs": []}, None, 400, "only one of"),
        ("wrong input name", "/v1/models/ranker:predict", {"instances": [{"inputs": x} for x in _b64(sample[:2])]},
         None, 400, "inputs"),
        ("not base64", "/v1/models/ranker:predict", {"instances": [{"b64": "%%%"}]}, None, 400, "base64"),
        ("not tf.Examples", "/v1/models/ranker:predict", {"instances": ["garbage"]}, None, 400, ""),
        ("ragged", "/v1/models/ranker:predict", {"inputs": [["a"], "b"]}, None, 400, "examples"),
        ("classify", "/v1/models/ranker:classify", {"examples": [{}]}, None, 400, "call Predict"),
        ("regress", "/v1/models/ranker:regress", {"examples": [{}]}, None, 400, "call Predict"),
        ("no model name", "/v1/models", None, None, 400, "Missing model name in request."),
        ("malformed", "/v1/models/ranker:explain", {}, None, 400, "Malformed request: POST /v1/models/ranker:explain"),
        ("over the size limit", "/v1/models/ranker:predict", {"instances": _b64(sample * 20)}, None, 413, "bytes"),
    ] + [(case, "/v1/models/ranker:predict", {"instances": _b64([sample[1], record])}, None, 400, feature)
         for case, record, feature in bad_sid_requests(sample[0])
         + bad_embedding_requests(sample[0], SMALL_WORLD.embedding_dim)]
    for case, path, body, raw, code, words in cases:
        found, answer = _call(served, path, body, raw)
        assert found == code, (case, answer)
        assert isinstance(answer, dict) and set(answer) == {"error"}, (case, answer)
        assert words in answer["error"], (case, answer)
    assert _call(served, "/v1/models/ranker:predict", good)[0] == 200  # still serving


def test_rest_status_and_metadata_equal_the_grpc_answers(served):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "ranker"
    status = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(served["grpc"])).GetModelStatus(request)
    code, body = _call(served, "/v1/models/ranker")
    assert code == 200
    assert body == json_format.MessageToDict(status, preserving_proto_field_name=True,
                                             always_print_fields_with_no_presence=True)
    assert body["model_version_status"] == [
        {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}} for v in (2, 1)]
    assert _call(served, "/v1/models/ranker/labels/stable")[1]["model_version_status"][0]["version"] == "1"
    code, metadata = _call(served, "/v1/models/ranker/versions/1/metadata")
    assert code == 200 and metadata["model_spec"]["version"] == "1"
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "transform_features"}
    assert signatures["serving_default"]["inputs"][fk.SERVING_INPUT]["dtype"] == "DT_STRING"
    assert _call(served, "/v1/models/ranker/versions/7")[0] == 404


def _counter(page: str, name: str, **labels) -> float:
    total = 0.0
    for line in page.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_prometheus_page_counts_requests_latency_batches_and_loads(served):
    assert any("up to 512 rows a call, waiting up to 3000 us, 1 batch threads" in line for line in served["printed"])
    sample = served["sample"][:5]
    before = _call(served, "/monitoring/prometheus/metrics")[1]
    for _ in range(3):
        assert _call(served, "/v1/models/ranker/labels/stable:predict", {"instances": _b64(sample)})[0] == 200
    RankerClient(served["grpc"]).predict("ranker", sample)
    RankerClient(served["grpc"]).predict("ranker", sample)
    assert _call(served, "/v1/models/ranker:predict", {"instances": ["garbage"]})[0] == 400
    code, after = _call(served, "/monitoring/prometheus/metrics")
    assert code == 200 and isinstance(after, str)
    count = ":tensorflow:serving:request_count"

    def moved(**labels):
        return _counter(after, count, **labels) - _counter(before, count, **labels)

    assert moved(model_version="1", entrypoint="REST", status="OK", API="predict") == 3
    assert moved(model_version="2", entrypoint="GRPC", status="OK", API="predict") == 2
    assert moved(model_version="2", entrypoint="REST", status="INVALID_ARGUMENT", API="predict") == 1
    latency = ":tensorflow:serving:request_latency_count"
    assert _counter(after, latency, model_version="1", entrypoint="REST") - \
        _counter(before, latency, model_version="1", entrypoint="REST") == 3
    batches = ":tensorflow:serving:batching_session:processed_batch_size_sum"
    assert _counter(after, batches) - _counter(before, batches) == 5 * 5 + 1  # rows: 5 requests of 5, the bad one
    for version in (1, 2):
        assert _counter(after, ":tensorflow:serving:model_load_count", model_version=version, status="success") == 1


def test_config_files_for_batching_and_monitoring_are_checked(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 64 }\n")
    assert read_batching_parameters_file(str(path), BatchingParameters(num_batch_threads=3)) == \
        BatchingParameters(max_batch_size=64, num_batch_threads=3)
    for text, words in [("allowed_batch_sizes: 8\nmax_batch_size { value: 8 }", "allowed_batch_sizes"),
                        ("pad_variable_length_inputs: true", "pad_variable_length_inputs"),
                        ("max_batch_size { value: 0 }", "max_batch_size must be positive"),
                        ("max_batch_size: 8", "not a text-format BatchingParameters")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=words):
            read_batching_parameters_file(str(path), BatchingParameters())
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }')
    assert read_monitoring_config(str(monitoring)) == "/metrics"
    monitoring.write_text("prometheus_config { enable: false }")
    assert read_monitoring_config(str(monitoring)) is None


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed `sock` (EOF or reset), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def test_idle_connections_hold_no_thread_and_close_at_the_timeout(served):
    """300 clients that send half a request line and nothing more: requests from others are answered while they
    are held, the server's threads do not grow with them, connections past --rest_api_max_connections are closed
    at once, and the idle ones are closed at --rest_api_timeout_in_ms. (One thread a connection, as before, held
    all 300 until the clients left.)"""
    process, _ = _start("--model_config_file", str(served["root"] / "models.config"), "--rest_api_port", "-1",
                        "--rest_api_timeout_in_ms", "4000", "--rest_api_num_threads", "2",
                        "--rest_api_max_connections", "310")
    rest = {"rest": process.rest}
    host, port = process.rest.rsplit(":", 1)
    threads = lambda: len(os.listdir(f"/proc/{process.pid}/task"))  # noqa: E731
    try:
        assert _call(rest, "/v1/models/ranker")[0] == 200
        before = threads()
        idle = [socket.create_connection((host, int(port))) for _ in range(300)]
        for sock in idle:
            sock.sendall(b"POST /v1/models/ranker:pred")
        body = {"instances": _b64(served["sample"][:3])}
        for _ in range(5):
            code, answer = _call(rest, "/v1/models/ranker:predict", body)
            assert code == 200 and len(answer["predictions"]) == 3
        assert not any(_closed(sock) for sock in idle)  # answered while all 300 were held
        assert threads() - before <= 2, (before, threads())
        time.sleep(0.5)
        extra = [socket.create_connection((host, int(port))) for _ in range(20)]
        time.sleep(0.5)
        assert sum(_closed(sock) for sock in extra) == 10  # past 310 open: closed at once
        deadline = time.time() + 30
        while not all(_closed(sock) for sock in idle) and time.time() < deadline:
            time.sleep(0.2)
        assert all(_closed(sock) for sock in idle)  # out of time: closed by the server
        assert _call(rest, "/v1/models/ranker:predict", body)[0] == 200
        for sock in idle + extra:
            sock.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
