"""The daily SavedModel TF Serving loads: the transform graph inside, explicit signatures, warm-up.

EXPORT_BASE/<version>/ is a SavedModel whose `serving_default` takes serialized raw tf.Examples
(the watch item, the candidate, the history, with the SIDs or embeddings the representation
needs) and returns `click_probability` and `engagement`; `transform_features` returns the
transformed features (sparse pieces padded with -1). The transform graph travels inside, so the
export needs nothing from the transform directory. assets.extra/ holds TF Serving's warm-up
records and the representation card. A version appears by an atomic rename: a server polling the
base path never sees half of one.

Requests are checked in the graph, so the stock TF Serving answers as `sidrec serve` does: a SID
of the wrong length, a code outside [0, K) (an all -1 SID is the "no SID" marker: the OOV row), a
history of more than H items (the log contract's cap; training rejects such rows too), or a content
embedding of the wrong length or with a non-finite value fail with INVALID_ARGUMENT naming the feature.

The export of a SID representation also holds the frozen RQ-VAE that made its SID table, so a request
may carry an item's content embedding instead of its SID (serving.cold_start); assets.extra/rqvae.json
is that RQ-VAE's card, its version the one the transform card records for the SID table.
"""

import contextlib
import os

from pipeline.core.tf_env import tf
import tensorflow_transform as tft  # noqa: I100  (after the TF set-up)

from models.sid_tokenizer import SidTokenizer
from pipeline.core import features as fk
from pipeline.core import files
from pipeline.sid.preprocessing import labelled_feature_spec, serving_feature_spec
from pipeline.core.representation import RepresentationConfig
from pipeline.core.cards import read_export_card, read_representation, read_rqvae_card
from pipeline.core.contracts import MissingOutputError
from pipeline.core.layout import ExportLayout, TransformLayout, rqvae_card
from pipeline.core.publish import list_versions, published
from serving import cold_start

SERVING_DEFAULT = "serving_default"
TRANSFORM_FEATURES = "transform_features"
PIECE_PADDING = -1


def _valid_sids(codes: tf.Tensor, key: str, codebook_size: int) -> tf.Operation:
    """Each row of codes [N, L] is a SID (every code in [0, K)) or the no-SID marker (every code -1)."""
    in_range = tf.reduce_all((codes >= 0) & (codes < codebook_size), axis=-1)
    marker = tf.reduce_all(tf.equal(codes, -1), axis=-1)
    bad = tf.logical_not(in_range | marker)
    return tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [
        f"{key}: codes must be in [0, {codebook_size}) (or all -1 for an item without a SID); got",
        tf.boolean_mask(codes, bad)[:1]], name=f"check_{key}")


@tf.autograph.experimental.do_not_convert  # plain graph building; autograph only slowed the trace
def request_checks(features: dict, config: RepresentationConfig) -> list[tf.Operation]:
    """Assertions on parsed raw features: SID codes and lengths, history cap H, finite embeddings.

    FixedLenFeature parsing already fails a watch or candidate SID (or embedding) of the wrong length
    with the feature's name; these cover what parsing cannot.
    """
    history_items = cold_start.row_lengths(features[fk.HISTORY_ITEM_IDS])
    checks = [tf.debugging.Assert(tf.reduce_all(history_items <= config.max_history), [
        f"{fk.HISTORY_ITEM_IDS}: at most {config.max_history} items (the log contract's H; training rejects "
        "longer histories too); got", tf.reduce_max(history_items)], name="check_history_length")]
    if config.has_sids:
        levels = config.num_levels
        for key in (fk.WATCH_SID, fk.CANDIDATE_SID):
            checks.append(_valid_sids(features[key], key, config.codebook_size))
        history = cold_start.ragged_rows(features[fk.HISTORY_SIDS])
        given = history.row_lengths()  # none at all: no history item has a SID
        length_check = tf.debugging.Assert(tf.reduce_all(tf.equal(given, history_items * levels) | tf.equal(given, 0)), [
            f"{fk.HISTORY_SIDS}: expected {levels} codes per item of {fk.HISTORY_ITEM_IDS}; got codes",
            given[:8], "for items", history_items[:8]], name="check_history_sids_length")
        with tf.control_dependencies([length_check]):
            codes = tf.reshape(tf.identity(history.flat_values), [-1, levels])
        checks += [length_check, _valid_sids(codes, fk.HISTORY_SIDS, config.codebook_size)]
        if fk.HISTORY_EMBEDDINGS in features:  # an export that computes missing SIDs from embeddings
            checks += cold_start.embedding_checks(features, config)
    if config.is_dense:
        for key in (fk.WATCH_EMBEDDING, fk.CANDIDATE_EMBEDDING):
            checks.append(tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(features[key])), [
                f"{key}: every value must be finite (no NaN or inf)"], name=f"check_{key}"))
    return checks


@tf.autograph.experimental.do_not_convert
def _checked(features: dict, config: RepresentationConfig) -> dict:
    """The parsed features, available only after every request check has passed."""
    with tf.control_dependencies(request_checks(features, config)):
        return {key: tf.SparseTensor(value.indices, tf.identity(value.values), value.dense_shape)
                if isinstance(value, tf.SparseTensor) else tf.identity(value) for key, value in features.items()}


def make_serving_signatures(model: tf.keras.Model, tft_output: tft.TFTransformOutput,
                            config: RepresentationConfig, tokenizer: SidTokenizer | None = None) -> dict:
    """`serving_default` and `transform_features`, both on a [None] string input named `examples`.

    The transform layer is assigned to the model so Keras tracks it and saves it with the model.
    Both check their requests first (`request_checks`); with a tokenizer (SID representations), both
    take content embeddings where SIDs are missing (serving.cold_start).
    """
    model.transform_layer = tft_output.transform_features_layer()
    raw_spec = tft_output.raw_feature_spec()
    request_spec, labelled_spec = serving_feature_spec(raw_spec), labelled_feature_spec(raw_spec)
    if tokenizer is not None:
        request_spec, labelled_spec = (cold_start.request_spec(spec, config) for spec in (request_spec, labelled_spec))
    examples = tf.TensorSpec([None], tf.string, name=fk.SERVING_INPUT)

    def parsed(examples, spec):
        features = _checked(tf.io.parse_example(examples, spec), config)
        return features if tokenizer is None else cold_start.resolve_sids(features, config, tokenizer)

    @tf.function(input_signature=[examples])
    def serve(examples):
        outputs = model(model.transform_layer(parsed(examples, request_spec)))
        return {fk.CLICK_PROBABILITY: tf.reshape(outputs["click_probability"], [-1]),
                fk.ENGAGEMENT_PREDICTION: tf.reshape(outputs["engagement"], [-1])}

    @tf.function(input_signature=[examples])
    def transform_features(examples):
        transformed = model.transform_layer(parsed(examples, labelled_spec))
        return {key: tf.sparse.to_dense(value, default_value=tf.cast(PIECE_PADDING, value.dtype))
                if isinstance(value, tf.SparseTensor) else value for key, value in transformed.items()}

    return {SERVING_DEFAULT: serve.get_concrete_function(), TRANSFORM_FEATURES: transform_features.get_concrete_function()}


def sid_tokenizer_for(transform_dir: str, rqvae_export: str = "") -> SidTokenizer | None:
    """The frozen RQ-VAE that made the SID table a transform output joined (None for other representations).

    Args:
      rqvae_export: its export version directory, where the one the transform card records has moved.

    Raises:
      MissingOutputError: no RQ-VAE export there.
      ValueError: the transform output records no RQ-VAE, or the export is another version than the
        one that made the SID table.
    """
    card = read_representation(transform_dir)
    if not RepresentationConfig(**card["config"]).has_sids:
        return None
    recorded = card.get("rqvae")
    if not recorded:
        raise ValueError(f"{transform_dir}: its representation.json records no RQ-VAE (made before instant cold "
                         "start): run `sidrec transform` again")
    path = rqvae_export or recorded["export"]
    if not tf.io.gfile.exists(rqvae_card(path)):
        raise MissingOutputError(f"RQ-VAE export {recorded['version']} (the one that made the SID table)", path,
                                 "sidrec train-rqvae, or pass its export version directory with --rqvae")
    tokenizer = SidTokenizer(path)
    if tokenizer.version != recorded["version"]:
        raise ValueError(f"{path} is RQ-VAE {tokenizer.version}, but the SID table {transform_dir} was made from holds "
                         f"SIDs of RQ-VAE {recorded['version']}: give that version's export")
    return tokenizer


@contextlib.contextmanager
def _tracked_while_saved(model: tf.keras.Model, name: str, module: tf.Module | None):
    """`module` tracked by the model while it is saved (the signatures use its variables), and only then:
    the training checkpoints stay the ranker's alone."""
    if module is None:
        yield
        return
    setattr(model, name, module)
    try:
        yield
    finally:
        delattr(model, name)
        model._delete_tracking(name)  # Keras's delattr leaves the checkpoint dependency (as Keras does for optimizers)
        # and, for a tf.Module that is not a layer, the module among the model's layers: its variables would
        # join model.trainable_variables for every later day of training.
        trackables = model._self_tracked_trackables
        trackables[:] = [t for t in trackables if t is not module]


def export_version(model: tf.keras.Model, transform_dir: str, export_base: str, version: int,
                   warmup_examples: list[bytes], model_name: str = "ranker",
                   tokenizer: SidTokenizer | None = None) -> str:
    """Writes EXPORT_BASE/<version>/ (replacing it) and returns its path.

    Args:
      model: the trained ranker (called once, so its variables exist).
      transform_dir: the TF Transform output the model was trained on.
      version: a positive integer (TF Serving serves the highest).
      warmup_examples: serialized raw tf.Examples for the warm-up requests (at least one).
      model_name: the model name in the warm-up requests.
      tokenizer: for SID representations, the frozen RQ-VAE that made the SID table (`sid_tokenizer_for`):
        the export then computes SIDs from content embeddings where a request has none. None: SIDs only.
    """
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    if not warmup_examples:
        raise ValueError("warm-up needs at least one serialized raw tf.Example")
    tft_output = tft.TFTransformOutput(transform_dir)
    final = os.path.join(export_base, str(version))
    config = RepresentationConfig(**read_representation(transform_dir)["config"])
    if tokenizer is not None and not config.has_sids:
        raise ValueError(f"{config.name} has no SIDs: its export takes no RQ-VAE")
    with published(final) as staging, _tracked_while_saved(model, "sid_tokenizer", tokenizer):
        model.save(staging, save_format="tf", include_optimizer=False, save_traces=False,
                   signatures=make_serving_signatures(model, tft_output, config, tokenizer))
        export_layout = ExportLayout(staging)
        files.makedirs(export_layout.assets_extra)
        files.copy(TransformLayout(transform_dir).card, export_layout.card)
        if tokenizer is not None:
            tf.io.gfile.copy(rqvae_card(tokenizer.export_dir), export_layout.rqvae_card, overwrite=True)
        write_warmup(export_layout.warmup, warmup_examples, model_name)
    return final


def check_rqvae_version(export_dir: str) -> str | None:
    """The version of the RQ-VAE an export holds (None: it holds none), checked against its SID table's.

    Raises:
      ValueError: the export's RQ-VAE is not the one that made the SID table its ranker was trained on.
    """
    layout = ExportLayout(export_dir)
    if not tf.io.gfile.exists(layout.rqvae_card):
        return None
    held = read_rqvae_card(export_dir)["rqvae_version"]
    recorded = (read_export_card(export_dir).get("rqvae") or {}).get("version")
    if held != recorded:
        raise ValueError(f"{export_dir}: holds RQ-VAE {held}, but its ranker was trained on SIDs of RQ-VAE "
                         f"{recorded} (assets.extra/representation.json): SIDs it computes would not be the table's")
    return held


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

    path = ExportLayout(export_dir).warmup
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request
            for r in tf.data.TFRecordDataset(path)]


# The integer versions under an export base, ascending (what TF Serving would see).
versions = list_versions
