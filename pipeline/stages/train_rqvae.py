"""`sidrec train-rqvae`: train the RQ-VAE on a corpus, freeze and export it, report SID quality."""

import dataclasses
import logging
import time

import numpy as np
from pipeline.core.tf_env import tf

from models import rqvae_savedmodel
from models.rqvae import RQVAE, RQVAEConfig
from pipeline.data import corpus_io
from pipeline.stages import plots
from pipeline.sid import sid_quality
from pipeline.core import files
from pipeline.core.layout import RQVAELayout, RunLayout
from pipeline.core.publish import absolute_path


class _EpochProgress(tf.keras.callbacks.Callback):
    """Per epoch: prints losses, per-level utilisation and the unique-SID ratio; stops on a plateau."""

    def __init__(self, embeddings: np.ndarray, config: RQVAEConfig, log):
        super().__init__()
        self.embeddings = embeddings
        self.config = config
        self.log = log
        self.history: list[dict] = []
        self.best = np.inf
        self.waited = 0
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        sids = encode(self.model, self.embeddings)
        usage = sid_quality.level_usage(sid_quality.code_counts(sids, self.config.codebook_size))
        unique = len(np.unique(sids, axis=0)) / len(sids)
        recon = float(logs["recon_loss"])
        entry = {"epoch": epoch + 1, "recon_loss": recon, "rq_loss": float(logs["rq_loss"]),
                 "utilisation": [round(u["utilisation"], 4) for u in usage], "unique_sid_ratio": unique,
                 "seconds": round(time.time() - self.started, 1)}
        self.history.append(entry)
        self.log(f"epoch {epoch + 1:3d}  recon {recon:.5f}  rq {entry['rq_loss']:.5f}  "
                 f"utilisation {' '.join(f'{u:.0%}' for u in entry['utilisation'])}  "
                 f"unique SIDs {unique:.4f}  ({entry['seconds']}s)")
        if recon < self.best * (1 - self.config.min_improvement):
            self.best, self.waited = recon, 0
        else:
            self.waited += 1
            if self.waited >= self.config.patience:
                self.log(f"reconstruction stopped improving for {self.waited} epochs: stopping")
                self.model.stop_training = True


def encode(model: RQVAE, embeddings: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """SIDs int64 [N, L] from the in-memory model."""
    return np.concatenate([model(tf.constant(embeddings[i:i + batch_size]))["sid"].numpy()
                           for i in range(0, len(embeddings), batch_size)]).astype(np.int64)


def reconstruct(model: RQVAE, embeddings: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    return np.concatenate([model(tf.constant(embeddings[i:i + batch_size]))["reconstruction"].numpy()
                           for i in range(0, len(embeddings), batch_size)])


def train(embeddings: np.ndarray, config: RQVAEConfig, log=print) -> tuple[RQVAE, list[dict]]:
    """Trains an RQ-VAE on float32 [N, D] embeddings; the same seed gives the same weights."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if len(embeddings) < 2:
        raise ValueError(f"need at least 2 items to train the RQ-VAE, got {len(embeddings)}")
    tf.keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    model = RQVAE.from_config_dataclass(embeddings.shape[1], config)
    if config.kmeans_init:
        rng = np.random.default_rng(config.seed)
        first = rng.permutation(len(embeddings))[:max(20 * config.batch_size, 8 * config.codebook_size)]
        model.kmeans_init(embeddings[np.sort(first)], config.kmeans_iterations)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
    data = (tf.data.Dataset.from_tensor_slices(embeddings)
            .shuffle(len(embeddings), seed=config.seed, reshuffle_each_iteration=True)
            .batch(config.batch_size, drop_remainder=len(embeddings) > config.batch_size)
            .prefetch(2))
    progress = _EpochProgress(embeddings, config, log)
    log(f"training RQ-VAE on {len(embeddings):,} items (D={embeddings.shape[1]}, "
        f"L={config.num_levels}, K={config.codebook_size}, encoder {config.encoder_dims})")
    model.fit(data, epochs=config.max_epochs, verbose=0, callbacks=[progress])
    return model, progress.history


def run(layout: RunLayout, config: RQVAEConfig, corpus_path: str | None = None,
        max_first_day: int | None = None, log=print) -> dict:
    """Trains on the corpus (items with first_day <= max_first_day, if given), exports, reports.

    The report covers every item of the corpus: the frozen model also tokenises items it never saw.
    """
    corpus_path = corpus_path or layout.data.corpus
    stage = RQVAELayout(layout.rqvae)
    corpus = corpus_io.read_corpus(corpus_path, rejects_path=layout.data.rejects_file("rqvae_corpus"))
    train_rows = np.ones(corpus.size, bool) if max_first_day is None else corpus.first_day <= max_first_day
    if not train_rows.any():
        raise ValueError(f"{corpus_path}: no item with first_day <= {max_first_day} to train on")
    model, history = train(corpus.embeddings[train_rows], config, log)
    path = rqvae_savedmodel.export(model, stage.export, metadata={
        "config": dataclasses.asdict(config), "corpus": absolute_path(corpus_path),
        "trained_items": int(train_rows.sum()), "max_first_day": max_first_day})
    frozen = rqvae_savedmodel.LoadedRQVAE(path)
    sids = frozen(corpus.embeddings)["sid"]
    report = sid_quality.report(sids, corpus.embeddings, corpus.item_ids, config.codebook_size,
                                reconstructions=reconstruct(model, corpus.embeddings))
    report.update({"rqvae_version": frozen.version, "export": path, "epochs": len(history),
                   "trained_items": int(train_rows.sum())})
    files.write_json(stage.sid_quality, report)
    files.write_json(stage.training_history, history)
    report["plots"] = [plots.rqvae_training(history, layout.plot("rqvae_training")),
                       plots.sid_quality(report, layout.plot("sid_quality"))]
    logging.info("exported RQ-VAE %s to %s", frozen.version, path)
    return report


def describe(report: dict, layout: RunLayout) -> str:
    return (sid_quality.format_report(report) + "\n"
            f"RQ-VAE {report['rqvae_version']} exported to {report['export']}\n"
            f"report: {RQVAELayout(layout.rqvae).sid_quality}\nplots:  {', '.join(report['plots'])}")
