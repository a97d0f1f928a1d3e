"""Reading the JSON cards and samples stages leave for the next stage, with errors that say what makes them."""

import json

from pipeline.core.contracts import MissingOutputError
from pipeline.core.layout import ExportLayout, SidTableLayout, TransformLayout, rqvae_card
from pipeline.core.tf_env import tf


def read_json(path: str, what: str, make_with: str) -> dict:
    """A JSON artefact; a missing one raises MissingOutputError naming the command that makes it."""
    if not tf.io.gfile.exists(path):
        raise MissingOutputError(what, path, make_with)
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def read_item_impressions(transform_dir: str) -> dict:
    """{item_id: impressions over the training window} of a transform output (its item_impressions shards)."""
    impressions = {}
    for path in sorted(tf.io.gfile.glob(TransformLayout(transform_dir).item_impressions + "*")):
        with tf.io.gfile.GFile(path) as f:
            impressions.update(json.loads(line) for line in f.read().splitlines())
    return impressions


def read_representation(transform_dir: str) -> dict:
    """The representation card (representation.json) of a transform output."""
    return read_json(TransformLayout(transform_dir).card, "transform output (representation.json)",
                     "sidrec transform")


def read_export_card(export_dir: str) -> dict:
    """The representation card a ranker export carries in its assets.extra (a copy of its transform's)."""
    return read_json(ExportLayout(export_dir).card, "ranker export card", "sidrec train")


def read_sid_stats(sids_dir: str) -> dict:
    """The materialisation job's stats.json (num_levels, codebook_size, utilisation, ...)."""
    return read_json(SidTableLayout(sids_dir).stats, "SID table statistics", "sidrec materialize")


def read_rqvae_card(export_dir: str) -> dict:
    """The frozen RQ-VAE's card (version, K, L, D) of one export version."""
    return read_json(rqvae_card(export_dir), "RQ-VAE card", "sidrec train-rqvae")


def read_serving_sample(transform_dir: str) -> list[bytes]:
    """The transform job's sample of raw serving examples (the exports' warm-up requests)."""
    path = TransformLayout(transform_dir).serving_sample
    if not tf.io.gfile.exists(path):
        raise MissingOutputError("serving sample", path, "sidrec transform")
    return [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
