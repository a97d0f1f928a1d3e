"""The daily SavedModel TF Serving loads: the transform graph inside, explicit signatures, warm-up.

EXPORT_BASE/<version>/ is a SavedModel whose `serving_default` takes serialized raw tf.Examples
(the watch item, the candidate, the history, with the SIDs or embeddings the representation
needs) and returns `click_probability` and `engagement`; `transform_features` returns the
transformed features (sparse pieces padded with -1). The transform graph travels inside, so the
export needs nothing from the transform directory. assets.extra/ holds TF Serving's warm-up
records and the representation card. A version appears by an atomic rename: a server polling the
base path never sees half of one.
"""

import os
import shutil

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the SentencePiece ops that sid_spm transform graphs hold)
import tensorflow_transform as tft

from pipeline import features as fk
from pipeline.preprocessing import serving_feature_spec
from pipeline.serving_examples import REPRESENTATION_CARD

SERVING_DEFAULT = "serving_default"
TRANSFORM_FEATURES = "transform_features"
ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
PIECE_PADDING = -1


def make_serving_signatures(model: tf.keras.Model, tft_output: tft.TFTransformOutput) -> dict:
    """`serving_default` and `transform_features`, both on a [None] string input named `examples`.

    The transform layer is assigned to the model so Keras tracks it and saves it with the model.
    """
    model.transform_layer = tft_output.transform_features_layer()
    raw_spec = tft_output.raw_feature_spec()
    request_spec = serving_feature_spec(raw_spec)
    examples = tf.TensorSpec([None], tf.string, name=fk.SERVING_INPUT)

    @tf.function(input_signature=[examples])
    def serve(examples):
        outputs = model(model.transform_layer(tf.io.parse_example(examples, request_spec)))
        return {fk.CLICK_PROBABILITY: tf.reshape(outputs["click_probability"], [-1]),
                fk.ENGAGEMENT_PREDICTION: tf.reshape(outputs["engagement"], [-1])}

    @tf.function(input_signature=[examples])
    def transform_features(examples):
        transformed = model.transform_layer(tf.io.parse_example(examples, raw_spec))
        return {key: tf.sparse.to_dense(value, default_value=tf.cast(PIECE_PADDING, value.dtype))
                if isinstance(value, tf.SparseTensor) else value for key, value in transformed.items()}

    return {SERVING_DEFAULT: serve.get_concrete_function(), TRANSFORM_FEATURES: transform_features.get_concrete_function()}


def export_version(model: tf.keras.Model, transform_dir: str, export_base: str, version: int,
                   warmup_examples: list[bytes], model_name: str = "ranker") -> str:
    """Writes EXPORT_BASE/<version>/ (replacing it) and returns its path.

    Args:
      model: the trained ranker (called once, so its variables exist).
      transform_dir: the TF Transform output the model was trained on.
      version: a positive integer (TF Serving serves the highest).
      warmup_examples: serialized raw tf.Examples for the warm-up requests (at least one).
      model_name: the model name in the warm-up requests.
    """
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    if not warmup_examples:
        raise ValueError("warm-up needs at least one serialized raw tf.Example")
    tft_output = tft.TFTransformOutput(transform_dir)
    final = os.path.join(export_base, str(version))
    staging = os.path.join(export_base, f".staging-{version}")  # not an integer: servers ignore it
    shutil.rmtree(staging, ignore_errors=True)
    model.save(staging, save_format="tf", signatures=make_serving_signatures(model, tft_output), include_optimizer=False)
    extra = os.path.join(staging, ASSETS_EXTRA)
    os.makedirs(extra, exist_ok=True)
    shutil.copy(os.path.join(transform_dir, REPRESENTATION_CARD), extra)
    write_warmup(os.path.join(extra, WARMUP_FILE), warmup_examples, model_name)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    return final


def write_warmup(path: str, examples: list[bytes], model_name: str) -> None:
    """TF Serving's warm-up file: PredictionLog records, one Predict request of all `examples`."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name,
                                                                        signature_name=SERVING_DEFAULT))
    request.inputs[fk.SERVING_INPUT].CopyFrom(tf.make_tensor_proto(examples, dtype=tf.string))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(log.SerializeToString())


def read_warmup(export_dir: str) -> list:
    """The PredictRequests of an export's warm-up file."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(export_dir, ASSETS_EXTRA, WARMUP_FILE)
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request
            for r in tf.data.TFRecordDataset(path)]


def versions(export_base: str) -> list[int]:
    """The integer version directories under a base path, ascending (what TF Serving would see)."""
    if not os.path.isdir(export_base):
        return []
    return sorted(int(name) for name in os.listdir(export_base)
                  if name.isdigit() and os.path.isdir(os.path.join(export_base, name)))
