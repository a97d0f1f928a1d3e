"""A TF Serving gRPC client for the ranker: raw tf.Examples in, candidates ranked by click probability out.

Written on the official `PredictionServiceStub`, with the signature's stable input and output names
(pipeline.core.features), so it works against `sidrec serve` and the stock `tensorflow_model_server` alike.
"""

import dataclasses

import grpc
import numpy as np
from pipeline.core.tf_env import tf
from google.protobuf import text_format
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from pipeline.core import features as fk
from pipeline.sid.serving_examples import ServingExampleBuilder


@dataclasses.dataclass(frozen=True)
class Ranked:
    item_id: str
    click_probability: float
    engagement: float


class RankerClient:
    """Calls Predict on `serving_default` of a model served at `target` (host:port)."""

    def __init__(self, target: str, timeout_seconds: float = 10.0):
        self._channel = grpc.insecure_channel(target)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._timeout = timeout_seconds

    def predict(self, model_name: str, examples: list[bytes], version: int | None = None,
                signature_name: str = "serving_default", version_label: str = "") -> tuple[dict[str, np.ndarray], int]:
        """Returns ({output name: array}, the version that answered); `version` or `version_label` pick one."""
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = version
        elif version_label:
            request.model_spec.version_label = version_label
        request.inputs[fk.SERVING_INPUT].CopyFrom(tf.make_tensor_proto(examples, dtype=tf.string))
        response = self._stub.Predict(request, timeout=self._timeout)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}, response.model_spec.version.value

    def rank(self, model_name: str, builder: ServingExampleBuilder, watch: str, candidates: list[str],
             history: list[str]) -> list[Ranked]:
        """One user's candidates, best first."""
        outputs, _ = self.predict(model_name, builder.rank_request(watch, candidates, history))
        scored = [Ranked(c, float(p), float(e)) for c, p, e in
                  zip(candidates, outputs[fk.CLICK_PROBABILITY], outputs[fk.ENGAGEMENT_PREDICTION])]
        return sorted(scored, key=lambda r: -r.click_probability)

    def close(self) -> None:
        self._channel.close()


def reload_config(target: str, config_text: str, timeout_seconds: float = 120.0) -> None:
    """Sends TF Serving's ReloadConfig (ModelService) with a text-format ModelServerConfig; raises grpc.RpcError
    (FAILED_PRECONDITION, INVALID_ARGUMENT, ...) when the server refuses it, in which case nothing changed."""
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(config_text, request.config)
    with grpc.insecure_channel(target) as channel:
        model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=timeout_seconds)
