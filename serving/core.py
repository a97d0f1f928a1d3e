"""What both front ends (gRPC and REST) do with a request: TF Serving's request protos in, response protos out.

As in TF Serving, the REST API turns its JSON into the same PredictRequest the gRPC API receives
and calls the same code, so both answer alike. The front ends time and count each request
(`metrics.request`); the methods here fill in the version that answered (`answer["version"]`).
"""

import grpc
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_management_pb2,
                                     predict_pb2)

from serving import model_config
from serving.batching import Batcher
from serving.manager import ModelManager
from serving.servables import Servable, ServingError, filter_outputs, outputs_to_protos

class ServingCore:
    def __init__(self, manager: ModelManager, batcher: Batcher | None = None):
        self.manager = manager
        self.metrics = manager.metrics
        self._batcher = batcher

    def servable(self, model_spec) -> Servable:
        """The servable a ModelSpec names: by version, by label, or the newest available."""
        version = model_spec.version.value if model_spec.HasField("version") else None
        return self.manager.servable(model_spec.name, version, model_spec.version_label)

    def predict(self, request: predict_pb2.PredictRequest, answer: dict) -> predict_pb2.PredictResponse:
        servable = self.servable(request.model_spec)
        answer["version"] = servable.version
        output_filter = tuple(request.output_filter)
        signature_name, arrays = servable.prepare(request.model_spec.signature_name, dict(request.inputs),
                                                  output_filter)
        outputs = (self._batcher.run(servable, signature_name, arrays) if self._batcher
                   else servable.call(signature_name, arrays))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for key, proto in outputs_to_protos(filter_outputs(outputs, output_filter)).items():
            response.outputs[key].CopyFrom(proto)
        return response

    def metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                 answer: dict) -> get_model_metadata_pb2.GetModelMetadataResponse:
        servable = self.servable(request.model_spec)
        answer["version"] = servable.version
        unknown = set(request.metadata_field) - {"signature_def"}
        if unknown or not request.metadata_field:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "metadata_field must be ['signature_def'], "
                               f"got {list(request.metadata_field)}")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(self.signature_def_map(servable))
        return response

    @staticmethod
    def signature_def_map(servable: Servable) -> get_model_metadata_pb2.SignatureDefMap:
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in servable.signature_defs.items():
            signatures.signature_def[name].CopyFrom(signature_def)
        return signatures

    def not_classify_or_regress(self, request, method: str, answer: dict):
        """Classify and Regress: these exports have predict signatures, so TF Serving's INVALID_ARGUMENT."""
        servable = self.servable(request.model_spec)
        answer["version"] = servable.version
        name = request.model_spec.signature_name or "serving_default"
        method_name = servable.signature_defs[name].method_name if name in servable.signature_defs else None
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Expected {method} signature method_name to be tensorflow/serving/{method}. Was: "
                           f"{method_name}: call Predict on '{name}'")

    def status(self, request: get_model_status_pb2.GetModelStatusRequest) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        if spec.version_label:
            version = self.manager.label_version(spec.name, spec.version_label)
        response = get_model_status_pb2.GetModelStatusResponse()
        for v, state in self.manager.statuses(spec.name, version):
            status = response.model_version_status.add()
            status.version = v
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
            status.status.SetInParent()  # TF Serving always sends a status: OK, or the load's error
            if state.error:
                status.status.error_code = error_code(grpc.StatusCode.UNKNOWN)
                status.status.error_message = state.error
        return response

    def reload_config(self, request: model_management_pb2.ReloadConfigRequest) -> model_management_pb2.ReloadConfigResponse:
        try:
            models = model_config.from_proto(request.config, "ReloadConfig")
        except ValueError as e:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        self.manager.reload(models)
        return model_management_pb2.ReloadConfigResponse()


def error_code(code: grpc.StatusCode) -> int:
    """tensorflow.error.Code of a gRPC status code (the two share their numbering)."""
    return code.value[0]
