"""The TF Serving-compatible server, in a subprocess on a free loopback port, through the official stubs."""

import os
import shutil
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

from pipeline.core import features as fk
from pipeline.core.cards import read_export_card, read_serving_sample
from pipeline.core.representation import RepresentationConfig
from pipeline.data import corpus_io, log_io, sid_table_io
from pipeline.sid.serving_examples import ServingExampleBuilder
from serving import export
from serving.batching import Batcher, BatchingParameters
from serving.client import RankerClient
from serving.servables import Servable, ServingError
from worlds import SMALL_WORLD, bad_embedding_requests, bad_sid_requests
from worlds import PredictionStream
from worlds import start_server as _start


@pytest.fixture(scope="module")
def exports(spm_run, spm_ranker, tmp_path_factory):
    """Two daily versions (1, 2) of a small sid_spm ranker, under two model names."""
    root = tmp_path_factory.mktemp("serving")
    shutil.copytree(spm_ranker["export"], root / "ranker")
    shutil.rmtree(root / "ranker" / "3")  # the hot-swap test publishes a version 3 itself
    shutil.copytree(root / "ranker", root / "other")
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{root / name}" model_platform: "tensorflow" }}\n'
        for name in ("ranker", "other")) + "}\n")
    return root, str(config), read_serving_sample(spm_run["output"])


@pytest.fixture(scope="module")
def server(exports):
    root, config, _ = exports
    process, target = _start("--model_config_file", config, "--max_request_bytes", "200000")
    yield target
    process.terminate()
    process.wait(timeout=30)


def _stub(target):
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))


def _request(examples, name="ranker", **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs[fk.SERVING_INPUT].CopyFrom(tf.make_tensor_proto(examples, dtype=tf.string))
    return request


def test_scores_equal_the_in_process_savedmodel(exports, server):
    root, _, sample = exports
    loaded = tf.saved_model.load(str(root / "ranker" / "2"))
    expected = loaded.signatures["serving_default"](examples=tf.constant(sample))
    for name in ("ranker", "other"):
        outputs, version = RankerClient(server).predict(name, sample)
        assert version == 2
        for key in (fk.CLICK_PROBABILITY, fk.ENGAGEMENT_PREDICTION):
            np.testing.assert_allclose(outputs[key], expected[key].numpy(), rtol=1e-6)


def test_embeddings_instead_of_sids_score_alike_through_grpc(exports, server, run_dir):
    """Logged rows sent with only content embeddings (no SIDs) get the scores of the same rows with SIDs."""
    root, _, _ = exports
    config = RepresentationConfig(**read_export_card(str(root / "ranker" / "2"))["config"])
    sids = sid_table_io.read_sid_table(run_dir.sids + "/table").lookup()
    corpus = corpus_io.read_corpus(run_dir.data.corpus)
    logs = log_io.read_logs(run_dir.data, days=[3])
    rows = ([logs.watch_item_id[r] for r in range(50)], [logs.candidate_item_id[r] for r in range(50)],
            [logs.history(r) for r in range(50)])
    by_sid = ServingExampleBuilder(config, sids=sids).serialize(*rows)
    by_embedding = ServingExampleBuilder(config, embeddings=dict(zip(corpus.item_ids, corpus.embeddings))).serialize(*rows)
    client = RankerClient(server)
    expected, _ = client.predict("ranker", by_sid)
    found, _ = client.predict("ranker", by_embedding)
    local = tf.saved_model.load(str(root / "ranker" / "2")).signatures["serving_default"](examples=tf.constant(by_embedding))
    for key in (fk.CLICK_PROBABILITY, fk.ENGAGEMENT_PREDICTION):
        np.testing.assert_allclose(found[key], expected[key], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(found[key], local[key].numpy(), rtol=1e-6)


def test_metadata_and_status(server):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "ranker"
    response = _stub(server).GetModelMetadata(request)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) == {"serving_default", "transform_features"}
    assert list(signatures.signature_def["serving_default"].inputs) == [fk.SERVING_INPUT]
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "ranker"
    status = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(server)).GetModelStatus(status_request)
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def _malformed(sample):
    wrong_name = _request(sample)
    wrong_name.inputs["inputs"].CopyFrom(wrong_name.inputs.pop(fk.SERVING_INPUT))
    wrong_dtype = _request(sample)
    wrong_dtype.inputs[fk.SERVING_INPUT].CopyFrom(tf.make_tensor_proto([1.0, 2.0]))
    wrong_shape = _request(sample)
    wrong_shape.inputs[fk.SERVING_INPUT].CopyFrom(tf.make_tensor_proto([[sample[0]], [sample[1]]], dtype=tf.string))
    bad_filter = _request(sample)
    bad_filter.output_filter.append("score")
    return [
        ("unknown model", _request(sample, name="nope"), grpc.StatusCode.NOT_FOUND, "nope"),
        ("unknown version", _request(sample, version=99), grpc.StatusCode.NOT_FOUND, "99"),
        ("unknown signature", _request(sample, signature_name="rank"), grpc.StatusCode.NOT_FOUND, "rank"),
        ("wrong input name", wrong_name, grpc.StatusCode.INVALID_ARGUMENT, "inputs"),
        ("wrong dtype", wrong_dtype, grpc.StatusCode.INVALID_ARGUMENT, "dtype"),
        ("wrong shape", wrong_shape, grpc.StatusCode.INVALID_ARGUMENT, "shape"),
        ("not tf.Examples", _request([b"\xff garbage"]), grpc.StatusCode.INVALID_ARGUMENT, ""),
        ("unknown output", bad_filter, grpc.StatusCode.INVALID_ARGUMENT, "score"),
        ("over the size limit", _request(sample * 20), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ] + [(case, _request([sample[1], record]), grpc.StatusCode.INVALID_ARGUMENT, feature)
         for case, record, feature in bad_sid_requests(sample[0]) + bad_embedding_requests(sample[0], SMALL_WORLD.embedding_dim)]


def test_malformed_requests_get_tf_servings_status_codes_and_the_server_stays_up(exports, server):
    _, _, sample = exports
    stub = _stub(server)
    for case, request, code, words in _malformed(sample):
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(request, timeout=30)
        assert error.value.code() == code, case
        assert words in error.value.details(), (case, error.value.details())
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "ranker"
    with pytest.raises(grpc.RpcError) as error:
        stub.Classify(classify)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "Predict" in error.value.details()
    assert tf.make_ndarray(stub.Predict(_request(sample[:3])).outputs[fk.CLICK_PROBABILITY]).shape == (3,)


def test_a_new_version_is_swapped_in_without_failed_requests(exports, spm_ranker):
    root, _, sample = exports
    base = root / "hot"
    shutil.copytree(root / "ranker", base)
    newer = os.path.join(spm_ranker["export"], "3")  # trained one day more than version 2: other scores
    expected = {version: tf.saved_model.load(path).signatures[export.SERVING_DEFAULT](
        examples=tf.constant(sample[:8]))[fk.CLICK_PROBABILITY].numpy() for version, path in ((2, str(base / "2")),
                                                                                               (3, newer))}
    assert np.abs(expected[2] - expected[3]).max() > 1e-4
    process, target = _start("--model_name", "ranker", "--model_base_path", str(base))
    try:
        with PredictionStream(target, "ranker", sample[:8]) as stream:
            time.sleep(1.0)
            shutil.copytree(newer, base / ".staging-3")  # as export.export_version publishes a version
            os.replace(base / ".staging-3", base / "3")
            stream.wait_for_version(3)
            time.sleep(0.5)
        seen = stream.versions
        assert not stream.failures and seen[0] == 2 and seen[-1] == 3
        assert seen == sorted(seen)  # never back to the old version once swapped
        for outputs, version in stream.answers:  # each answer is the scores of the version it names
            np.testing.assert_allclose(outputs[fk.CLICK_PROBABILITY], expected[version], rtol=1e-5, atol=1e-6)
        assert export.versions(str(base)) == [1, 2, 3]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_waits_for_the_first_version_of_a_base_path_that_has_none(exports, tmp_path):
    """As TF Serving: a base path without a version (a lineage yet to publish) is polled, said once (not at every
    poll), and its first version is served when it appears; until then Predict gets NOT_FOUND."""
    root, _, sample = exports
    base, log_path = tmp_path / "serving" / "ranker", str(tmp_path / "server.log")
    process, target = _start("--model_name", "ranker", "--model_base_path", str(base), stderr_path=log_path)
    try:
        time.sleep(1.5)  # several polls (every 0.2 s)
        with pytest.raises(grpc.RpcError) as error:
            _stub(target).Predict(_request(sample[:2]), timeout=30)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        base.mkdir(parents=True)
        shutil.copytree(root / "ranker" / "1", base / ".staging-1")
        os.replace(base / ".staging-1", base / "1")
        with PredictionStream(target, "ranker", sample[:2]) as stream:
            stream.wait_for_version(1)
        assert stream.versions and stream.versions[-1] == 1
    finally:
        process.terminate()
        process.wait(timeout=30)
    with open(log_path) as f:
        said = [line for line in f if "No versions of servable ranker found under base path" in line]
    assert len(said) == 1 and str(base) in said[0], said


def test_serve_refuses_versions_that_do_not_load(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "serve", "--model_base_path", str(tmp_path),
                             "--port", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no loadable integer version directory" in result.stderr


def _concurrently(fn, args_list):
    """fn(*args) for every args from its own thread, all released at once; results or exceptions, in order."""
    results, barrier = [None] * len(args_list), threading.Barrier(len(args_list))

    def worker(i):
        barrier.wait()
        try:
            results[i] = fn(*args_list[i])
        except Exception as e:  # collected: the test looks at each
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(args_list))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _prepared(servable, examples):
    return servable.prepare("", {fk.SERVING_INPUT: tf.make_tensor_proto(examples, dtype=tf.string)})


def test_batcher_runs_concurrent_requests_as_one_call_and_a_bad_one_fails_alone(exports):
    root, _, sample = exports
    servable = Servable("ranker", 2, str(root / "ranker" / "2"))
    assert servable.batchable_signatures == {export.SERVING_DEFAULT, export.TRANSFORM_FEATURES}
    batcher = Batcher(BatchingParameters(batch_timeout_micros=500_000, num_batch_threads=1))
    slices = [sample[i * 8:(i + 1) * 8] for i in range(6)]
    requests = [_prepared(servable, s) for s in slices] + [_prepared(servable, [b"\xff garbage"])]
    results = _concurrently(lambda name, arrays: batcher.run(servable, name, arrays), requests)
    for examples, outputs in zip(slices, results[:-1]):
        expected = servable.call(*_prepared(servable, examples))
        assert set(outputs) == set(expected)
        for key in expected:
            np.testing.assert_allclose(outputs[key], expected[key], rtol=1e-6)
    assert isinstance(results[-1], ServingError) and results[-1].code == grpc.StatusCode.INVALID_ARGUMENT
    assert batcher.requests == 7 and batcher.batches < 7


def test_batcher_queue_is_bounded(exports):
    root, _, sample = exports
    servable = Servable("ranker", 2, str(root / "ranker" / "2"))
    gate, running = threading.Event(), threading.Event()
    real_call = servable.call

    def held_call(*args):  # the one batch thread stays busy until the test lets it go
        running.set()
        gate.wait()
        return real_call(*args)

    servable.call = held_call
    batcher = Batcher(BatchingParameters(max_batch_size=8, max_enqueued_batches=1, batch_timeout_micros=0,
                                         num_batch_threads=1))
    name, arrays = _prepared(servable, sample[:8])
    busy = threading.Thread(target=batcher.run, args=(servable, name, arrays))
    busy.start()
    running.wait(30)
    queued = threading.Thread(target=batcher.run, args=(servable, name, arrays))
    queued.start()  # fills the queue: one full batch of rows waits
    deadline = time.time() + 30
    while batcher._enqueued_rows < 8 and time.time() < deadline:
        time.sleep(0.01)
    with pytest.raises(ServingError) as error:
        batcher.run(servable, name, arrays)
    assert error.value.code == grpc.StatusCode.UNAVAILABLE and "full" in str(error.value)
    gate.set()
    busy.join(30)
    queued.join(30)
    assert batcher.requests == 2
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchingParameters(max_batch_size=0)


def test_the_batching_server_gives_every_request_its_own_scores(exports):
    root, _, sample = exports
    loaded = tf.saved_model.load(str(root / "ranker" / "2"))
    printed = []
    process, target = _start("--model_name", "ranker", "--model_base_path", str(root / "ranker"),
                             "--enable_batching", "--batch_timeout_micros", "20000", printed=printed)
    try:
        assert any("batching Predict requests" in line and "20000 us" in line for line in printed), printed
        client = RankerClient(target)
        slices = [sample[i * 8:(i + 1) * 8] for i in range(8)]
        results = _concurrently(lambda examples: client.predict("ranker", examples), [(s,) for s in slices])
        for examples, (outputs, version) in zip(slices, results):
            expected = loaded.signatures["serving_default"](examples=tf.constant(examples))
            assert version == 2
            np.testing.assert_allclose(outputs[fk.CLICK_PROBABILITY], expected[fk.CLICK_PROBABILITY].numpy(), rtol=1e-6)
        with pytest.raises(grpc.RpcError) as error:
            _stub(target).Predict(_request([b"\xff garbage"]), timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        process.terminate()
        process.wait(timeout=30)
