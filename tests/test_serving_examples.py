"""Raw serving examples: the client's builder joins SIDs exactly as the transform job does."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from pipeline.core import features as fk
from pipeline.core.cards import read_representation, read_serving_sample
from pipeline.sid.preprocessing import serving_feature_spec
from pipeline.stages.predict import builder_for_run


def test_serving_examples_from_the_sid_table_match_the_jobs_join(run_dir, spm_run):
    """The client's builder joins SIDs exactly as the transform job did for the same logged row."""
    card = read_representation(spm_run["output"])
    builder = builder_for_run(run_dir, card)
    spec = serving_feature_spec(tft.TFTransformOutput(spm_run["output"]).raw_feature_spec())
    for record in read_serving_sample(spm_run["output"])[:10]:
        logged = tf.io.parse_single_example(record, spec)
        history = [h.decode() for h in tf.sparse.to_dense(logged[fk.HISTORY_ITEM_IDS]).numpy()]
        [built] = builder.serialize([logged[fk.WATCH_ITEM_ID].numpy().decode()],
                                    [logged[fk.CANDIDATE_ITEM_ID].numpy().decode()], [history])
        rebuilt = tf.io.parse_single_example(built, spec)
        for key in spec:
            a, b = logged[key], rebuilt[key]
            if isinstance(a, tf.SparseTensor):
                a, b = tf.sparse.to_dense(a), tf.sparse.to_dense(b)
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=key)
    with pytest.raises(ValueError, match="rows disagree"):
        builder.serialize(["a"], ["b", "c"], [[]])
