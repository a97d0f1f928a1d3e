"""One loaded model version (a servable): its signatures, checked against their SignatureDefs, and its warm-up.

serving/manager.py decides which versions are loaded; this file runs one.
"""

import grpc
import numpy as np
from pipeline.core.tf_env import tf
from tensorflow.core.protobuf import saved_model_pb2

from pipeline.core import files
from pipeline.core.layout import SAVED_MODEL_FILE, ExportLayout
from serving import export


class ServingError(Exception):
    """A request TF Serving would refuse: the gRPC status code and a message saying what was wrong."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class Servable:
    """One loaded version: its signatures (callable) and their SignatureDefs (for validation and metadata)."""

    def __init__(self, name: str, version: int, path: str):
        self.name, self.version, self.path = name, version, path
        self.rqvae_version = export.check_rqvae_version(path)  # refuse an export whose RQ-VAE is not its table's
        self._model = tf.saved_model.load(path)
        meta_graph = saved_model_pb2.SavedModel.FromString(
            files.read_bytes(files.join(path, SAVED_MODEL_FILE))).meta_graphs[0]
        self.signature_defs = {k: v for k, v in meta_graph.signature_def.items() if not k.startswith("__")}
        # Signatures whose every input and output has a batch dimension: the ones requests can share a call of.
        self.batchable_signatures = {name for name, signature in self.signature_defs.items()
                                     if all(_has_batch_dimension(t) for t in (*signature.inputs.values(),
                                                                              *signature.outputs.values()))}

    def run(self, signature_name: str, inputs: dict, output_filter=()) -> dict:
        """Checks the inputs against the SignatureDef, runs it, returns {output name: ndarray}."""
        name, arrays = self.prepare(signature_name, inputs, output_filter)
        return filter_outputs(self.call(name, arrays), output_filter)

    def prepare(self, signature_name: str, inputs: dict, output_filter=()) -> tuple[str, dict]:
        """The signature's name and the request's TensorProtos as arrays, checked against its SignatureDef."""
        signature_name = signature_name or export.SERVING_DEFAULT
        signature = self.signature_defs.get(signature_name)
        if signature is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Serving signature name: \"{signature_name}\" not found "
                               f"in signature def (model {self.name} version {self.version} has "
                               f"{sorted(self.signature_defs)})")
        missing, extra = set(signature.inputs) - set(inputs), set(inputs) - set(signature.inputs)
        if missing or extra:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input names must be {sorted(signature.inputs)}: missing {sorted(missing)}, "
                               f"unexpected {sorted(extra)}")
        arrays = {}
        for key, proto in inputs.items():
            spec = signature.inputs[key]
            if proto.dtype != spec.dtype:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input '{key}': expects dtype {tf.dtypes.as_dtype(spec.dtype).name}, got "
                                   f"{_dtype_name(proto.dtype)}")
            try:
                value = tf.make_ndarray(proto)
            except Exception as e:  # a TensorProto whose content does not match its shape
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{key}': {e}") from None
            expected = [d.size for d in spec.tensor_shape.dim]
            if not spec.tensor_shape.unknown_rank and (
                    value.ndim != len(expected) or any(e not in (-1, s) for e, s in zip(expected, value.shape))):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input '{key}': expects shape {expected} (-1: any), got {list(value.shape)}")
            arrays[key] = value
        unknown = set(output_filter) - set(signature.outputs)
        if unknown:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"output_filter {sorted(unknown)}: not outputs of the signature {sorted(signature.outputs)}")
        return signature_name, arrays

    def call(self, signature_name: str, arrays: dict) -> dict:
        """Runs a signature on inputs `prepare` checked; returns every output as an ndarray."""
        try:
            outputs = self._model.signatures[signature_name](**{k: tf.constant(v) for k, v in arrays.items()})
        except tf.errors.InvalidArgumentError as e:  # e.g. examples that do not parse
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, e.message) from None
        except UnicodeDecodeError:  # TF's own message quoted the undecodable input bytes
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"inputs of '{signature_name}' could not be parsed (not serialized tf.Examples?)") from None
        return {k: v.numpy() for k, v in outputs.items()}

    def warm_up(self) -> int:
        """Runs the export's warm-up requests (as TF Serving does at load); returns how many."""
        warmup = ExportLayout(self.path).warmup
        if not files.exists(warmup):
            return 0
        requests = export.read_warmup(self.path)
        for request in requests:
            self.run(request.model_spec.signature_name, dict(request.inputs))
        return len(requests)


def _has_batch_dimension(tensor_info) -> bool:
    shape = tensor_info.tensor_shape
    return not shape.unknown_rank and len(shape.dim) > 0 and shape.dim[0].size == -1


def _dtype_name(enum: int) -> str:
    try:
        return tf.dtypes.as_dtype(enum).name
    except TypeError:
        return f"DataType {enum}"


def filter_outputs(outputs: dict, output_filter=()) -> dict:
    """The outputs a request's output_filter names (all of them when it names none)."""
    return {k: v for k, v in outputs.items() if not output_filter or k in output_filter}


def outputs_to_protos(outputs: dict) -> dict:
    return {k: tf.make_tensor_proto(np.asarray(v)) for k, v in outputs.items()}
