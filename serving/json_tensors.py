"""TF Serving's REST JSON for Predict: a request body into a PredictRequest's inputs, outputs into a body.

Request: `{"signature_name": ..., "instances": [...]}` (row format: one entry per example; an object
of named inputs, or the value alone when the signature has one input) or `{"inputs": ...}`
(columnar: an object of named inputs, or the value alone). Bytes travel as `{"b64": "..."}`, which
is how a serialized tf.Example goes. Response: `{"predictions": [...]}` for row requests (one entry
per example; an object of named outputs, or the value alone when there is one) and `{"outputs": ...}`
for columnar ones. String outputs whose name ends in `_bytes` go out as `{"b64": ...}`.
"""

import base64
import binascii
import json

import grpc
import numpy as np
from pipeline.core.tf_env import tf

from serving.servables import ServingError

ROW, COLUMNAR = "row", "columnar"


def _bad(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def parse_body(body: bytes) -> dict:
    try:
        value = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _bad(f"JSON Parse error: {e}") from None
    if not isinstance(value, dict):
        raise _bad("JSON Value: the request body must be a JSON object")
    return value


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _leaf(value, is_string: bool, name: str):
    if _is_b64(value):
        if not is_string:
            raise _bad(f"input '{name}': {{\"b64\": ...}} is for string (bytes) inputs only")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError):
            raise _bad(f"input '{name}': the \"b64\" value is not base64") from None
    if isinstance(value, list):
        return [_leaf(v, is_string, name) for v in value]
    if isinstance(value, dict):
        raise _bad(f"input '{name}': expected a value or a list, got an object with keys {sorted(value)}")
    if is_string:
        if not isinstance(value, str):
            raise _bad(f"input '{name}': expected a string or {{\"b64\": ...}}, got {json.dumps(value)}")
        return value.encode()
    return value


def _tensor(value, info, name: str):
    dtype = tf.dtypes.as_dtype(info.dtype)
    is_string = dtype == tf.string
    converted = _leaf(value, is_string, name)
    try:
        array = (np.array(converted, dtype=object) if is_string else np.array(converted, dtype=dtype.as_numpy_dtype))
    except (ValueError, TypeError) as e:
        raise _bad(f"input '{name}': not a rectangular array of {dtype.name}: {e}") from None
    if is_string and any(not isinstance(v, bytes) for v in array.reshape(-1)):
        raise _bad(f"input '{name}': not a rectangular array of strings")
    return tf.make_tensor_proto(array, dtype=dtype)


def fill_predict_request(body: dict, inputs_of, request) -> str:
    """Fills `request` (its model_spec already set) from a parsed body; returns the format (ROW or COLUMNAR).

    `inputs_of(signature_name)` gives the signature's {input name: TensorInfo}.
    """
    signature_name = body.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise _bad("'signature_name' must be a string")
    request.model_spec.signature_name = signature_name
    if ("instances" in body) == ("inputs" in body):
        raise _bad("Missing 'inputs' or 'instances' key" if "instances" not in body else
                   "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exist")
    unknown = set(body) - {"signature_name", "instances", "inputs"}
    if unknown:
        raise _bad(f"unknown keys {sorted(unknown)}: expected 'signature_name' and 'instances' or 'inputs'")
    infos = inputs_of(signature_name)
    names = sorted(infos)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise _bad("'instances' must be a non-empty list")
        named = all(isinstance(i, dict) and not _is_b64(i) for i in instances)
        if not named and len(names) != 1:
            raise _bad(f"the signature has inputs {names}: each instance must be an object naming them")
        columns = {}
        for name in names:
            if not named:
                columns[name] = instances
                continue
            missing = [i for i, instance in enumerate(instances) if name not in instance]
            if missing:
                raise _bad(f"instance {missing[0]}: missing input '{name}' (inputs: {names})")
            columns[name] = [instance[name] for instance in instances]
        if named:
            extra = set().union(*instances) - set(names)
            if extra:
                raise _bad(f"instances name inputs {sorted(extra)} the signature does not have (inputs: {names})")
        fmt = ROW
    else:
        inputs = body["inputs"]
        named = isinstance(inputs, dict) and not _is_b64(inputs)
        if not named and len(names) != 1:
            raise _bad(f"the signature has inputs {names}: 'inputs' must be an object naming them")
        columns = inputs if named else {names[0]: inputs}
        fmt = COLUMNAR
    for name, value in columns.items():
        if name not in infos:
            raise _bad(f"input '{name}': not an input of the signature (inputs: {names})")
        request.inputs[name].CopyFrom(_tensor(value, infos[name], name))
    return fmt


def _json_value(array: np.ndarray, name: str):
    if array.dtype == object or array.dtype.kind == "S":
        as_b64 = name.endswith("_bytes")

        def convert(v: bytes):
            if as_b64:
                return {"b64": base64.b64encode(v).decode()}
            try:
                return v.decode()
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(v).decode()}

        return np.vectorize(convert, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def body_from_outputs(outputs: dict[str, np.ndarray], fmt: str) -> bytes:
    if fmt == COLUMNAR:
        values = {k: _json_value(v, k) for k, v in outputs.items()}
        return json.dumps({"outputs": next(iter(values.values())) if len(values) == 1 else values}).encode()
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in outputs.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"outputs have different batch sizes {sizes}: ask in the columnar format ('inputs')")
    values = {k: _json_value(v, k) for k, v in outputs.items()}
    if len(values) == 1:
        return json.dumps({"predictions": next(iter(values.values()))}).encode()
    rows = next(iter(sizes.values()))
    return json.dumps({"predictions": [{k: v[i] for k, v in values.items()} for i in range(rows)]}).encode()
