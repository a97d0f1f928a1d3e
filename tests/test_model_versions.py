"""Version policies, labels, states, reloads and broken versions: the model manager in process, then a canary
through a running server (a label moved under a stream of requests, by ReloadConfig and by the config file)."""

import logging
import os
import shutil
import time

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from pipeline.core.cards import read_serving_sample
from serving import client, model_config
from serving.manager import ModelManager
from serving.model_config import ALL, LATEST, SPECIFIC, ModelConfig, VersionPolicy
from serving.servables import ServingError
from worlds import PredictionStream
from worlds import start_server as _start


@pytest.fixture(scope="module")
def base(spm_ranker, tmp_path_factory):
    """Versions 1-3 of a small sid_spm ranker (one a day), each scoring differently."""
    root = tmp_path_factory.mktemp("versions") / "ranker"
    shutil.copytree(spm_ranker["export"], root)
    return root


def _states(manager, name="ranker"):
    return {v: (s.state, s.error != "") for v, s in manager.statuses(name)}


def _config(base, policy=VersionPolicy(), labels=None, name="ranker"):
    return ModelConfig(name, str(base), policy, tuple(sorted((labels or {}).items())))


def test_policies_choose_the_versions_loaded_and_a_reload_changes_them(base):
    manager = ModelManager([_config(base)])
    manager.poll()
    assert _states(manager) == {3: ("AVAILABLE", False)} and manager.servable("ranker").version == 3
    steps = [(VersionPolicy(LATEST, num_versions=2), {3: "AVAILABLE", 2: "AVAILABLE"}),
             (VersionPolicy(SPECIFIC, versions=(1,)), {3: "END", 2: "END", 1: "AVAILABLE"}),
             (VersionPolicy(ALL), {3: "AVAILABLE", 2: "AVAILABLE", 1: "AVAILABLE"})]
    for policy, expected in steps:
        manager.reload([_config(base, policy)])
        manager.poll()
        assert {v: s for v, (s, _) in _states(manager).items()} == expected, policy
        available = [v for v, s in expected.items() if s == "AVAILABLE"]
        assert manager.servable("ranker").version == max(available)
        for version in available:
            assert manager.servable("ranker", version).version == version
    assert [v for v, _ in manager.statuses("ranker")] == [3, 2, 1]  # newest first, as TF Serving lists them
    with pytest.raises(ServingError) as error:
        manager.reload([ModelConfig("ranker", str(base) + "-elsewhere")])
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and "base_path cannot change" in str(error.value)


def test_labels_name_available_versions_and_a_refused_reload_changes_nothing(base):
    manager = ModelManager([_config(base, VersionPolicy(SPECIFIC, versions=(1, 2)), {"stable": 1, "canary": 2})])
    manager.poll()
    manager.apply_labels()
    assert manager.servable("ranker", label="stable").version == 1
    assert manager.servable("ranker", label="canary").version == 2
    with pytest.raises(ServingError) as error:
        manager.servable("ranker", label="nope")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error.value) == "Unrecognized servable version label: nope"
    # Version 3 is on disk but not loaded: a label may not name it (TF Serving's FAILED_PRECONDITION) ...
    with pytest.raises(ServingError) as error:
        manager.reload([_config(base, VersionPolicy(SPECIFIC, versions=(1, 2, 3)), {"stable": 1, "canary": 3})])
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "assign label to version 3 of model ranker, which is not currently available" in str(error.value)
    assert manager.servable("ranker", label="canary").version == 2  # ... and nothing changed
    manager.poll()
    assert 3 not in _states(manager)  # the refused config's policy was not applied either
    # One reload loads it, the next labels it.
    manager.reload([_config(base, VersionPolicy(SPECIFIC, versions=(1, 2, 3)), {"stable": 1, "canary": 2})])
    manager.poll()
    manager.reload([_config(base, VersionPolicy(SPECIFIC, versions=(1, 2, 3)), {"stable": 2, "canary": 3})])
    assert [manager.servable("ranker", label=x).version for x in ("stable", "canary")] == [2, 3]


def test_labels_for_unavailable_versions_when_allowed_only_new_ones(base):
    config = _config(base, VersionPolicy(SPECIFIC, versions=(1,)), {"stable": 1})
    manager = ModelManager([config], allow_labels_for_unavailable=True)
    manager.poll()
    manager.apply_labels()
    # A new label may name a version still to load ...
    manager.reload([_config(base, VersionPolicy(SPECIFIC, versions=(1, 2)), {"stable": 1, "next": 2})])
    with pytest.raises(ServingError) as error:  # ... which is not served until it is loaded
        manager.servable("ranker", label="next")
    assert error.value.code == grpc.StatusCode.NOT_FOUND
    manager.poll()
    assert manager.servable("ranker", label="next").version == 2
    # An existing label may not move to a version that is not available.
    with pytest.raises(ServingError) as error:
        manager.reload([_config(base, VersionPolicy(SPECIFIC, versions=(1, 2, 3)), {"stable": 3, "next": 2})])
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert manager.servable("ranker", label="stable").version == 1


def test_a_broken_version_is_logged_once_and_tried_again_only_when_its_files_change(base, tmp_path, caplog):
    root = tmp_path / "ranker"
    shutil.copytree(base / "3", root / "3")
    manager = ModelManager([_config(root)])
    manager.poll()
    shutil.copytree(base / "1", root / "4")
    (root / "4" / "variables" / "variables.index").write_bytes(b"not a checkpoint index")  # a broken newest version
    with caplog.at_level(logging.ERROR, logger="serving.manager"):
        for _ in range(4):
            manager.poll()
    failures = [r for r in caplog.records if "version 4 failed to load" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    states = manager.statuses("ranker")
    assert [(v, s.state) for v, s in states] == [(4, "END"), (3, "AVAILABLE")]
    assert states[0][1].error  # its load error, as GetModelStatus reports it
    assert manager.servable("ranker").version == 3  # the served version stays
    assert 'model_load_count{model_name="ranker",model_version="4",status="fail"} 1' in manager.metrics.page()
    shutil.rmtree(root / "4")
    shutil.copytree(base / "1", root / "4")  # fixed: new files
    manager.poll()
    assert [(v, s.state, s.error) for v, s in manager.statuses("ranker")] == [(4, "AVAILABLE", ""), (3, "END", "")]
    shutil.rmtree(root / "4")  # retention deleted it: the newest on disk is served again
    manager.poll()
    assert manager.servable("ranker").version == 3 and _states(manager)[4] == ("END", False)


def test_a_reload_adds_and_removes_models_all_or_nothing(base, tmp_path):
    manager = ModelManager([_config(base)])
    manager.poll()
    with pytest.raises(ServingError) as error:  # a new model with nothing to serve: nothing changes
        manager.reload([_config(base), _config(tmp_path / "empty", name="other")])
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION and "other" in str(error.value)
    assert manager.model_names() == ["ranker"]
    manager.reload([_config(base, name="other")])  # ranker removed, other added (loaded before the reload returns)
    assert manager.model_names() == ["other"] and manager.servable("other").version == 3
    with pytest.raises(ServingError) as error:
        manager.servable("ranker")
    assert error.value.code == grpc.StatusCode.NOT_FOUND


def test_config_files_are_checked_by_name(tmp_path):
    def parse(text):
        return model_config.parse(text, "models.config")

    models = parse('model_config_list { config { name: "a" base_path: "/x" model_platform: "tensorflow"\n'
                   '  model_version_policy { specific { versions: 3 versions: 1 } }\n'
                   '  version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 3 } } }')
    assert models == [ModelConfig("a", "/x", VersionPolicy(SPECIFIC, versions=(1, 3)),
                                  (("canary", 3), ("stable", 1)))]
    assert parse('model_config_list { config { name: "a" base_path: "/x" model_version_policy { all {} } } }')[0] \
        .policy == VersionPolicy(ALL)
    for text, words in [
        ('model_config_list { config { name: "a" base_path: "/x" } config { name: "a" base_path: "/y" } }', "unique"),
        ('model_config_list { config { name: "a" } }', "base_path"),
        ('model_config_list { config { name: "a" base_path: "/x" version_labels { key: "2x" value: 1 } } }',
         "label '2x'"),
        ('model_config_list { config { name: "a" base_path: "/x" model_version_policy { specific {} } } }',
         "lists no versions"),
        ('model_config_list { config { name: "a" base_path: "/x" model_platform: "pytorch" } }', "model_platform"),
        ("model_config_list { nonsense: 1 }", "not a text-format ModelServerConfig"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse(text)


def _status(target, name="ranker"):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    response = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(target)).GetModelStatus(request)
    return {s.version: get_model_status_pb2.ModelVersionStatus.State.Name(s.state) for s in response.model_version_status}


def _canary_config(base, versions, labels):
    policy = " ".join(f"versions: {v}" for v in versions)
    label_text = " ".join(f'version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())
    return (f'model_config_list {{ config {{ name: "ranker" base_path: "{base}" model_platform: "tensorflow"\n'
            f"  model_version_policy {{ specific {{ {policy} }} }} {label_text} }} }}\n")


def test_a_canary_moves_its_label_under_a_stream_of_requests_without_a_failure(base, spm_run, tmp_path):
    sample = read_serving_sample(spm_run["output"])[:8]
    expected = {v: tf.saved_model.load(str(base / str(v))).signatures["serving_default"](
        examples=tf.constant(sample))["click_probability"].numpy() for v in (1, 2, 3)}
    config = tmp_path / "models.config"
    config.write_text(_canary_config(base, (1, 2), {"stable": 1, "canary": 2}))
    process, target = _start("--model_config_file", str(config), "--model_config_file_poll_wait_seconds", "0.2")
    try:
        assert _status(target) == {2: "AVAILABLE", 1: "AVAILABLE"}
        with PredictionStream(target, "ranker", sample, label="stable") as stream:
            time.sleep(1.0)
            client.reload_config(target, _canary_config(base, (1, 2), {"stable": 2}))  # promote the canary
            stream.wait_for_version(2)
            time.sleep(0.5)
        assert not stream.failures and stream.versions[0] == 1 and stream.versions[-1] == 2
        assert stream.versions == sorted(stream.versions)
        for outputs, version in stream.answers:
            assert abs(outputs["click_probability"] - expected[version]).max() < 1e-5
        with pytest.raises(grpc.RpcError) as error:  # a label on a version not loaded: refused, nothing changes
            client.reload_config(target, _canary_config(base, (1, 2), {"stable": 3}))
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "version 3 of model ranker, which is not currently available" in error.value.details()
        # The config file, reread: version 3 loads, version 1 unloads; stable stays on 2.
        config.write_text(_canary_config(base, (2, 3), {"stable": 2}))
        deadline = time.time() + 60
        while _status(target) != {3: "AVAILABLE", 2: "AVAILABLE", 1: "END"} and time.time() < deadline:
            time.sleep(0.2)
        assert _status(target) == {3: "AVAILABLE", 2: "AVAILABLE", 1: "END"}
        assert client.RankerClient(target).predict("ranker", sample, version_label="stable")[1] == 2
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_poll_that_fails_does_not_end_polling(tmp_path, caplog):
    manager = ModelManager([_config(tmp_path)])
    calls = []

    def poll():
        calls.append(time.time())
        if len(calls) <= 2:
            raise OSError("base path unreadable for a while")

    manager.poll = poll
    with caplog.at_level(logging.ERROR, logger="serving.manager"):
        manager.start_polling(0.01)
        deadline = time.time() + 10
        while len(calls) < 4 and time.time() < deadline:
            time.sleep(0.01)
        manager.stop()
    assert len(calls) >= 4  # polling went on after the failures
    assert len([r for r in caplog.records if "polling the base paths failed" in r.getMessage()]) == 1  # logged once
