"""The daily export: hermetic (transform graph inside), explicit signatures, warm-up, atomic versions."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from google.protobuf import text_format

from models.ranker import ranker_optimizer
from pipeline.stages import day_loop
from pipeline.core import features as fk
from pipeline.sid.preprocessing import labelled_feature_spec, serving_feature_spec
from pipeline.core.cards import read_export_card, read_representation, read_serving_sample
from pipeline.core.representation import RepresentationConfig
from serving import export

CONFIG = day_loop.TrainConfig(batch_size=256, hidden_dims=(16,), embedding_dim=8)


def _trained(transform_dir):
    model = day_loop.build_ranker(read_representation(transform_dir), CONFIG)
    model.compile(optimizer=ranker_optimizer(model, 0.01))
    model.fit(day_loop.day_dataset(transform_dir, 1, 256), epochs=1, verbose=0)
    return model


def _in_process_scores(model, transform_dir, examples):
    """What the trained model gives through the transform output, in this process."""
    tft_output = tft.TFTransformOutput(transform_dir)
    raw = tf.io.parse_example(examples, serving_feature_spec(tft_output.raw_feature_spec()))
    return model(tft_output.transform_raw_features(raw))


def test_export_is_hermetic_and_serves_a_text_form_example(spm_run, tmp_path):
    """STYLE item 4: delete the transform directory, reload in a fresh process, compare scores."""
    transform_dir = str(tmp_path / "transform")
    shutil.copytree(spm_run["output"], transform_dir)
    model = _trained(transform_dir)
    sample = read_serving_sample(transform_dir)
    expected = _in_process_scores(model, transform_dir, sample)
    path = export.export_version(model, transform_dir, str(tmp_path / "export"), 7, sample)
    assert path.endswith(os.path.join("export", "7")) and export.versions(str(tmp_path / "export")) == [7]
    shutil.rmtree(transform_dir)

    text = text_format.MessageToString(tf.train.Example.FromString(sample[0]))
    (tmp_path / "example.pbtxt").write_text(text)
    script = textwrap.dedent(f"""
        import json
        import tensorflow as tf
        import tensorflow_text  # noqa: F401
        from google.protobuf import text_format
        loaded = tf.saved_model.load({path!r})
        example = text_format.Parse(open({str(tmp_path / 'example.pbtxt')!r}).read(), tf.train.Example())
        serve = loaded.signatures["serving_default"]
        out = serve(examples=tf.constant([example.SerializeToString()]))
        print(json.dumps({{k: v.numpy().tolist() for k, v in out.items()}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(served) == {fk.CLICK_PROBABILITY, fk.ENGAGEMENT_PREDICTION}
    np.testing.assert_allclose(served[fk.CLICK_PROBABILITY], expected["click_probability"].numpy()[:1, 0], rtol=1e-5)
    np.testing.assert_allclose(served[fk.ENGAGEMENT_PREDICTION], expected["engagement"].numpy()[:1, 0], rtol=1e-5)


def test_signatures_warmup_and_transform_features(spm_run, tmp_path):
    model = _trained(spm_run["output"])
    sample = read_serving_sample(spm_run["output"])
    path = export.export_version(model, spm_run["output"], str(tmp_path), 1, sample, model_name="ranker")
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {export.SERVING_DEFAULT, export.TRANSFORM_FEATURES}
    serve = loaded.signatures[export.SERVING_DEFAULT]
    assert list(serve.structured_input_signature[1]) == [fk.SERVING_INPUT]

    [request] = export.read_warmup(path)
    assert request.model_spec.name == "ranker" and request.model_spec.signature_name == export.SERVING_DEFAULT
    warmup = tf.make_ndarray(request.inputs[fk.SERVING_INPUT])
    assert list(warmup) == sample and len(sample) == 64
    scores = serve(examples=tf.constant(warmup))[fk.CLICK_PROBABILITY].numpy()
    np.testing.assert_allclose(scores, _in_process_scores(model, spm_run["output"], sample)["click_probability"]
                               .numpy()[:, 0], rtol=1e-5)
    assert read_export_card(path)["name"] == "sid_spm_300"

    # transform_features reads logged examples (labels and day included) and pads pieces with -1.
    logged = []
    for record in sample[:4]:
        example = tf.train.Example.FromString(record)
        for key, value in ((fk.CLICK, 1), (fk.DAY, 3), (fk.CANDIDATE_FIRST_DAY, 3)):
            example.features.feature[key].int64_list.value.append(value)
        example.features.feature[fk.ENGAGEMENT].float_list.value.append(0.5)
        logged.append(example.SerializeToString())
    transformed = loaded.signatures[export.TRANSFORM_FEATURES](examples=tf.constant(logged))
    assert transformed[fk.COLD_START].numpy().tolist() == [1, 1, 1, 1]
    tft_output = tft.TFTransformOutput(spm_run["output"])
    expected = tft_output.transform_raw_features(
        tf.io.parse_example(logged, labelled_feature_spec(tft_output.raw_feature_spec())))
    for key in (fk.WATCH_PIECES, fk.CANDIDATE_PIECES, fk.HISTORY_PIECES):
        np.testing.assert_array_equal(transformed[key].numpy(),
                                      tf.sparse.to_dense(expected[key], default_value=-1).numpy(), err_msg=key)


def test_the_savedmodel_itself_refuses_out_of_range_and_misshapen_sids(spm_run, tmp_path):
    """In the graph, so the stock TF Serving answers the same: INVALID_ARGUMENT naming the feature."""
    from worlds import bad_sid_requests, edited_example

    model = _trained(spm_run["output"])
    sample = read_serving_sample(spm_run["output"])
    serve = tf.saved_model.load(export.export_version(model, spm_run["output"], str(tmp_path), 1, sample)
                                ).signatures[export.SERVING_DEFAULT]
    for case, record, feature in bad_sid_requests(sample[0]):
        with pytest.raises(tf.errors.InvalidArgumentError, match=feature):
            serve(examples=tf.constant([sample[1], record]))
    # An all -1 SID is the "no SID" marker: scored with the OOV row as the candidate's one piece (as in
    # training), which is neither code 0's pieces nor the item's own.
    no_sid = edited_example(sample[0], candidate_sid=[-1] * 4)
    served = serve(examples=tf.constant([no_sid, edited_example(sample[0], candidate_sid=[0] * 4), sample[0]]))
    tft_output = tft.TFTransformOutput(spm_run["output"])
    features = tft_output.transform_raw_features(
        tf.io.parse_example(sample[:1], serving_feature_spec(tft_output.raw_feature_spec())))
    oov = RepresentationConfig(**read_representation(spm_run["output"])["config"]).oov_piece
    features[fk.CANDIDATE_PIECES] = tf.SparseTensor([[0, 0]], tf.constant([oov], tf.int64), [1, 1])
    expected = model(features)["click_probability"].numpy()[0, 0]
    probabilities = served[fk.CLICK_PROBABILITY].numpy()
    assert probabilities[0] == pytest.approx(expected, abs=1e-6)
    assert abs(probabilities[0] - probabilities[1]) > 1e-6 and abs(probabilities[0] - probabilities[2]) > 1e-6


def test_an_export_with_the_rqvae_leaves_the_model_s_variables_the_ranker_s(spm_run, tmp_path):
    """The RQ-VAE is the export's, not the ranker's: after saving, later days train the ranker's variables only."""
    model = _trained(spm_run["output"])
    before = [v.name for v in model.trainable_variables]
    export.export_version(model, spm_run["output"], str(tmp_path), 1, read_serving_sample(spm_run["output"]),
                          tokenizer=export.sid_tokenizer_for(spm_run["output"]))
    assert [v.name for v in model.trainable_variables] == before and not hasattr(model, "sid_tokenizer")
