"""`sidrec train`: fit the ranker one day at a time; evaluate each evaluation day before fitting on it.

The protocol (pipeline.core.protocol): the transform output's training window is days 1..T. The ranker
trains on every day; each day d from T+1 on is first evaluated by the model trained on days 1..d-1
(progressive validation: CTR AUC over all of day d, CTR/1D AUC over its impressions of items first
seen that day, exact AUCs from `pipeline.core.metrics`, and the engagement RMSE), then trained on. Per
day: TensorBoard scalars, a line in metrics.jsonl (evaluation days), the model's predictions of the
stability probe (evaluation days; pipeline.core.stability), an export EXPORT_BASE/<d>/ for TF Serving
and a checkpoint. Run again after a crash, it resumes after the last completed day and
ends with the same metrics. The run directory's fingerprint.json records the transform output and
config it was trained from; a run made from other inputs is rebuilt (or refused), never resumed.

Under a tf.distribute strategy (models.distribution) the model is built in its scope and `fit`
splits each global batch over the replicas; under multi_worker each worker reads its share of the
day's batches, every worker evaluates the whole day alike, and only the chief writes the run
directory and the exports (the others write to a scratch directory they remove at the end, and
resume from the chief's checkpoint).
"""

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np
from pipeline.core.tf_env import tf
import tensorflow_transform as tft  # noqa: I100  (after the TF set-up)

from models import distribution
from models.item_encoder import DenseItemEncoder, PieceItemEncoder
from models.ranker import MultitaskRanker, ranker_optimizer
from pipeline.core import features as fk
from pipeline.core import files, fingerprint
from pipeline.core.cards import read_item_impressions, read_representation, read_serving_sample
from pipeline.core.layout import TRANSFORMED_SUFFIX, RankerLayout, TransformLayout
from pipeline.core.representation import RepresentationConfig, is_dense_name
from pipeline.core.contracts import MissingOutputError
from pipeline.core import row_lookups, slices, stability
from pipeline.core.metrics import binary_auc, calibration, log_loss, normalized_entropy, rmse
from pipeline.core.protocol import held_out
from pipeline.core.publish import published
from pipeline.sid.spm_dropout import dropout_fn, split_table
from serving.export import export_version, sid_tokenizer_for
from pipeline.stages.configs import TrainConfig  # noqa: F401  (re-exported beside the loop)

# Bump when a change to the loop changes its metrics for the same inputs (old runs then rebuild).
RUN_FORMAT = 6  # 3: lazy Adam on the item table; 4: row 0 no longer moved by empty histories; 5: NE, slices;
# 6: the stability probe


def config_fields(config: TrainConfig) -> dict:
    """The config as the run's name and fingerprint record it: spm_dropout and holdout_per_mille only when
    set, so runs made before they existed keep their names."""
    fields = dataclasses.asdict(config)
    for optional in ("spm_dropout", "holdout_per_mille"):
        if not fields[optional]:
            del fields[optional]
    return fields


def run_label(representation: str, config: TrainConfig) -> str:
    """The name of one training run: the representation, then what differs from the defaults.

    The dense baseline never reads the history (the paper's setting), so it carries no history suffix.
    """
    label = representation
    if config.depth_multiplier != 1:
        label += f"_{config.depth_multiplier:g}x"
    if config.trunk != "shared_bottom":
        label += f"_{config.trunk}"
    if config.spm_dropout:
        label += f"_dropout{config.spm_dropout:g}"
    if not config.use_history and not is_dense_name(representation):
        label += "_no_history"
    return label


def run_dir_name(representation: str, config: TrainConfig) -> str:
    """The run's directory: its label and a hash of the whole config, so two configs never share one."""
    return f"{run_label(representation, config)}-{fingerprint.Fingerprint(config_fields(config)).value[:8]}"


def run_fingerprint(card: dict, config: TrainConfig) -> fingerprint.Fingerprint:
    """What a ranker run is made from: its transform output's fingerprint and the training config."""
    return fingerprint.Fingerprint({"stage": "ranker", "format": RUN_FORMAT, "transform": card["fingerprint"],
                                    "representation": card["name"], "train_config": config_fields(config)})


def build_ranker(card: dict, config: TrainConfig) -> MultitaskRanker:
    """The ranker for the representation a transform run describes (its representation.json)."""
    if RepresentationConfig(**card["config"]).is_dense:
        encoder = DenseItemEncoder(dim=config.embedding_dim)
    else:
        encoder = PieceItemEncoder(card["table_rows"], config.embedding_dim, config.use_history,
                                   config.table_learning_rate)
    return MultitaskRanker(encoder, config.hidden_dims, config.depth_multiplier, config.engagement_weight,
                           config.trunk, config.num_experts)


def read_spm_model(transform_dir: str) -> bytes:
    """The SentencePiece model a sid_spm transform output learned (spm/sid_spm.model)."""
    path = TransformLayout(transform_dir).spm_model
    if not tf.io.gfile.exists(path):
        raise MissingOutputError("SentencePiece model (spm_dropout needs a sid_spm transform output)", path,
                                 "sidrec transform --kind sid_spm")
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def transformed_day_files(transform_dir: str, day: int) -> tuple[list[str], str]:
    """Day `day`'s transformed shards, sorted, and their TFRecord compression ("" or "GZIP").

    Transform outputs written before they became uncompressed are GZIP; both read.
    """
    prefix = TransformLayout(transform_dir).day_prefix(day)
    files = sorted(f for f in tf.io.gfile.glob(prefix + "-*")
                   if f.endswith((TRANSFORMED_SUFFIX, TRANSFORMED_SUFFIX + ".gz")))
    if not files:
        raise MissingOutputError(f"transformed examples for day {day}", f"{prefix}-*{TRANSFORMED_SUFFIX}",
                                 "sidrec transform")
    return files, "GZIP" if files[0].endswith(".gz") else ""


def day_dataset(transform_dir: str, day: int, batch_size: int, holdout_per_mille: int = 0,
                limit: int = 0, keys: tuple[str, ...] = ()) -> tf.data.Dataset:
    """Day `day`'s transformed examples, parsed, in file order (deterministic); without the held-out users'
    rows when `holdout_per_mille` is set (pipeline.core.protocol.held_out); the first `limit` only, if set;
    only the features `keys`, if given."""
    files, compression = transformed_day_files(transform_dir, day)
    spec = tft.TFTransformOutput(transform_dir).transformed_feature_spec()
    key_spec = {fk.USER_KEY: spec[fk.USER_KEY]}
    if keys:
        spec = {key: spec[key] for key in keys}
    records = tf.data.TFRecordDataset(files, compression_type=compression)
    if limit:
        records = records.take(limit)
    if holdout_per_mille:
        records = records.filter(lambda record: tf.logical_not(tf.reduce_any(held_out(
            tf.io.parse_single_example(record, key_spec)[fk.USER_KEY], day, holdout_per_mille))))
    return (records
            .batch(batch_size)
            .map(lambda records: tf.io.parse_example(records, spec), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def read_popularity_bands(transform_dir: str) -> slices.PopularityBands:
    """The training window's popularity band of every item it impressed (the transform output's counts), keyed
    as the graph keys candidates (features.CANDIDATE_KEY)."""
    counts = read_item_impressions(transform_dir)
    ids, impressions = list(counts), list(counts.values())
    keys = (tf.strings.to_hash_bucket_fast(np.array(ids, dtype=object), fk.USER_KEY_BUCKETS).numpy() if ids
            else np.zeros(0, np.int64))
    return slices.PopularityBands(keys, np.array(impressions, np.int64))


def evaluate_day(model: MultitaskRanker, dataset: tf.data.Dataset, predictions_path: str | None = None,
                 bands: slices.PopularityBands | None = None, lookups: np.ndarray | None = None) -> dict:
    """One day's metrics: CTR AUC overall and on cold-start impressions, log loss, NE and calibration (overall
    and cold start), engagement RMSE, and the slices by item age and (with `bands`) training-window popularity;
    with the table rows' training `lookups`, the shares of the day's candidate pieces never looked up
    (pipeline.core.row_lookups).

    With `predictions_path`, the click probabilities, cold-start flags, clicks, user keys, item ages and
    candidate keys are kept there (.npz), in the order of the day's examples, for comparisons between runs
    (the A/A difference, the bootstrap over users).
    """
    columns = {name: [] for name in ("p", "e", "y", "w", "cold", "users", "age", "items")}
    never, new = [], []
    for batch in dataset:
        out = model(batch)
        if lookups is not None:
            batch_never, batch_new = row_lookups.untrained(batch, lookups)
            never.append(batch_never)
            new.append(batch_new)
        for name, value in (("p", out["click_probability"]), ("e", out["engagement"]), ("y", batch[fk.CLICK]),
                            ("w", batch[fk.ENGAGEMENT]), ("cold", batch[fk.COLD_START]),
                            ("users", batch[fk.USER_KEY]), ("age", batch[fk.ITEM_AGE]),
                            ("items", batch[fk.CANDIDATE_KEY])):
            columns[name].append(value.numpy().ravel())
    p, e, y, w, cold, u, age, items = (np.concatenate(v) for v in columns.values())
    c = cold == 1
    if predictions_path:
        with published(predictions_path) as staging:
            files.save_npz(staging, click_probability=p, cold_start=c, click=y, user_key=u, item_age=age,
                           candidate_key=items)
    nan = float("nan")
    entry = {"examples": int(len(y)), "ctr_auc": binary_auc(y, p),
             "ctr_1d_auc": binary_auc(y[c], p[c]) if c.any() else nan,
             "cold_start_examples": int(c.sum()), "engagement_rmse": rmse(w, e),
             "ctr_log_loss": log_loss(y, p), "ctr_ne": normalized_entropy(y, p),
             "ctr_1d_ne": normalized_entropy(y[c], p[c]) if c.any() else nan,
             "calibration": calibration(y, p), "calibration_1d": calibration(y[c], p[c]) if c.any() else nan,
             "slices": {"age": slices.slice_metrics(y, p, slices.age_masks(age))}}
    if bands is not None:
        entry["slices"]["popularity"] = slices.slice_metrics(y, p, bands.masks(items))
    if lookups is not None:
        entry.update(row_lookups.shares(np.concatenate(never), np.concatenate(new)))
    return entry


def score_probe(model: MultitaskRanker, probe: tf.data.Dataset, bands: slices.PopularityBands, path: str) -> None:
    """Keeps the model's click probabilities of the stability probe at `path`, with its tail and new rows."""
    p, items, cold = [], [], []
    for batch in probe:
        p.append(model(batch)["click_probability"].numpy().ravel())
        items.append(batch[fk.CANDIDATE_KEY].numpy().ravel())
        cold.append(batch[fk.COLD_START].numpy().ravel())
    tail = bands.bands(np.concatenate(items)) == slices.POPULARITY_BANDS.index("tail")
    with published(path) as staging:
        files.save_npz(staging, click_probability=np.concatenate(p), tail=tail, new=np.concatenate(cold) == 1)


def trained_through(run_dir: str) -> int:
    """The last day a ranker run's checkpoint has trained through (0 without a checkpoint)."""
    latest = tf.train.latest_checkpoint(RankerLayout(run_dir).checkpoints)
    return int(tf.train.load_variable(latest, "day/.ATTRIBUTES/VARIABLE_VALUE")) if latest else 0


def read_protocol_card(transform_dir: str) -> dict:
    """The transform output's card, which must carry the protocol's split and a fingerprint.

    Raises:
      ValueError: a transform output made before the evaluation protocol.
    """
    card = read_representation(transform_dir)
    if "eval_from" not in card or "fingerprint" not in card:
        raise ValueError(f"{transform_dir} was made before the evaluation protocol (no eval_from or fingerprint "
                         "in its representation.json): run `sidrec transform` again")
    return card


def train(transform_dir: str, output_dir: str, config: TrainConfig, export_base: str | None = None,
          model_name: str = "ranker", log=print, export_every_day: bool = True,
          if_changed: str = "rebuild", strategy: tf.distribute.Strategy | None = None,
          rqvae_export: str = "", fit_verbose: int = 2, export_days=(), keep_probe: bool = True) -> list[dict]:
    """Trains on every day, evaluating the evaluation days first (resuming after the last checkpointed day).

    Args:
      transform_dir: a transform output (representation.json, transformed/day=NNNN/, transform_fn).
      output_dir: checkpoints, metrics.jsonl, fingerprint.json and TensorBoard logs go here.
      export_base: where the daily SavedModels go as <day>/ (default OUTPUT_DIR/export).
      model_name: the model name in the exports' warm-up requests.
      export_every_day: False exports only after the last day (experiments that compare many runs) and the days
        in `export_days` (the days `sidrec daily` blesses).
      if_changed: "rebuild" or "refuse" when output_dir holds a run made from other inputs.
      strategy: a tf.distribute strategy (models.distribution.make_strategy); default: the current one.
      rqvae_export: SID representations: the export version directory of the RQ-VAE that made the SID
        table, where it is not where the transform card records it (the exports hold it).
      fit_verbose: Keras's per-epoch line (2) or silence (0; `sidrec daily` prints its own line a day).
      keep_probe: score the stability probe on each evaluation day (churn is read within a run of fixed days;
        `sidrec daily` steps, whose probe is the day each step evaluates, skip it).

    Returns:
      One entry per evaluation day: the day, the AUCs, the engagement RMSE (and the export, if any).
    """
    strategy = strategy or tf.distribute.get_strategy()
    card = read_protocol_card(transform_dir)
    made_from = run_fingerprint(card, config)
    if config.spm_dropout and not RepresentationConfig(**card["config"]).uses_spm:
        raise ValueError(f"--spm_dropout splits sid_spm pieces; {card['name']} has none")
    tokenizer = sid_tokenizer_for(transform_dir, rqvae_export)  # before training: a missing RQ-VAE fails now
    if not distribution.is_chief(strategy):
        scratch = tempfile.mkdtemp(prefix="sidrec-worker-")  # local: a worker's own scratch, not a run artefact
        try:
            return _train(transform_dir, card, RankerLayout(output_dir).checkpoints, scratch, config,
                          os.path.join(scratch, "export"), model_name, log, export_every_day, strategy, tokenizer,
                          fit_verbose, export_days, keep_probe)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # local: the scratch above
    if files.exists(output_dir) and not fingerprint.up_to_date(output_dir, made_from, if_changed, "ranker run", log):
        files.remove(output_dir)
    made_from.write(output_dir)
    return _train(transform_dir, card, RankerLayout(output_dir).checkpoints, output_dir, config,
                  export_base or RankerLayout(output_dir).export, model_name, log, export_every_day, strategy,
                  tokenizer, fit_verbose, export_days, keep_probe)


def _train(transform_dir: str, card: dict, restore_from: str, output_dir: str, config: TrainConfig,
           export_base: str, model_name: str, log, export_every_day: bool,
           strategy: tf.distribute.Strategy, tokenizer, fit_verbose: int = 2, export_days=(),
           keep_probe: bool = True) -> list[dict]:
    """The day loop; every worker runs it alike (collective ops need them all), writing to output_dir."""
    days, eval_from = card["days"], card["eval_from"]
    run = RankerLayout(output_dir)
    representation = RepresentationConfig(**card["config"])
    warmup = read_serving_sample(transform_dir)
    splits = split_table(representation, read_spm_model(transform_dir)) if config.spm_dropout else None  # once a run
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    tf.keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_ranker(card, config)
        model.compile(optimizer=ranker_optimizer(model, config.learning_rate))
        model(next(iter(day_dataset(transform_dir, days[0], 2))))  # create the variables before restoring
        done = tf.Variable(0, dtype=tf.int64)
    table_rows = 0 if representation.is_dense else card["table_rows"]
    use_history = config.use_history and not representation.is_dense
    lookups = tf.Variable(tf.zeros([table_rows], tf.int64), trainable=False)  # pipeline.core.row_lookups
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, day=done, lookups=lookups)
    manager = tf.train.CheckpointManager(checkpoint, run.checkpoints, max_to_keep=2)
    latest = tf.train.latest_checkpoint(restore_from)
    if latest:
        status = checkpoint.restore(latest)
        status.assert_existing_objects_matched()
        # The legacy optimizers create their slots on the first step, which restores them then; a run
        # with no day left never takes that step, so do not warn about them.
        status.expect_partial()
        log(f"resuming after day {int(done.numpy())} from {latest}")
    metrics_path = run.metrics
    history = _read_metrics(metrics_path, int(done.numpy()))
    bands = read_popularity_bands(transform_dir)
    # The last day's first rows: no model of the run has trained on them when it scores them.
    probe = day_dataset(transform_dir, days[-1], config.batch_size, limit=stability.PROBE_ROWS)
    tensorboard = run.tensorboard
    evaluation_writer = tf.summary.create_file_writer(os.path.join(tensorboard, "next_day"))
    for step, day in enumerate(days):
        if day <= int(done.numpy()):
            continue
        entry = None
        if day >= eval_from:
            log(f"day {day} ({step + 1}/{len(days)}): evaluate on day {day}, unseen, then fit on it")
            entry = {"evaluated_on_day": day, "trained_through_day": days[step - 1], "representation": card["name"],
                     "use_history": config.use_history and not representation.is_dense,
                     **evaluate_day(model, day_dataset(transform_dir, day, config.batch_size), run.predictions(day),
                                    bands, lookups.numpy() if table_rows else None)}
            if keep_probe:
                score_probe(model, probe, bands, run.probe_predictions(day))
            log(f"day {day}: CTR AUC {entry['ctr_auc']:.4f}, CTR/1D AUC {entry['ctr_1d_auc']:.4f} "
                f"({entry['cold_start_examples']:,} cold-start impressions), NE {entry['ctr_ne']:.4f}, "
                f"calibration {entry['calibration']:.3f}, engagement RMSE {entry['engagement_rmse']:.4f}")
            with evaluation_writer.as_default(step=step):
                for name in ("ctr_auc", "ctr_1d_auc", "ctr_ne", "calibration", "engagement_rmse"):
                    tf.summary.scalar(name, entry[name])
        else:
            log(f"day {day} ({step + 1}/{len(days)}): fit on day {day} (training window, days before {eval_from})")
        training = day_dataset(transform_dir, day, config.batch_size, config.holdout_per_mille)
        if config.spm_dropout:
            training = training.enumerate().map(dropout_fn(splits, config.spm_dropout, config.seed, day))
        if multi_worker:
            training = distribution.shard_per_worker(training)
        # Keras counts epochs across the days, so TensorBoard's epoch axis is the training day's index.
        model.fit(training, initial_epoch=step, epochs=step + 1,
                  verbose=fit_verbose, callbacks=[tf.keras.callbacks.TensorBoard(tensorboard, write_graph=False)])
        if table_rows:  # the rows this day's training looked up (SPM dropout's splits not counted)
            keys = row_lookups.PIECE_KEYS if use_history else row_lookups.PIECE_KEYS[:2]
            lookups.assign_add(row_lookups.count(day_dataset(transform_dir, day, config.batch_size,
                                                             config.holdout_per_mille, keys=keys), table_rows, keys))
        if export_every_day or day == days[-1] or day in export_days:
            exported = export_version(model, transform_dir, export_base, day, warmup, model_name, tokenizer)
            log(f"exported {exported}")
            if entry:
                entry["export"] = exported
        if entry:
            history.append(entry)
            # Rewritten whole: a resumed run never duplicates a line.
            files.write_text(metrics_path, "".join(json.dumps(e) + "\n" for e in history))
        done.assign(day)
        manager.save()
    evaluation_writer.close()
    return history


def describe(history: list[dict], output_dir: str, export_base: str | None = None) -> str:
    """The per-day metrics table, and where the metrics, exports and TensorBoard logs are."""
    run = RankerLayout(output_dir)
    lines = [f"{'day':>4} {'CTR AUC':>8} {'CTR/1D AUC':>10} {'NE':>7} {'calibration':>11} {'engagement RMSE':>15}"]
    lines += [f"{e['evaluated_on_day']:>4} {e['ctr_auc']:>8.4f} {e['ctr_1d_auc']:>10.4f} {e['ctr_ne']:>7.4f} "
              f"{e['calibration']:>11.3f} {e['engagement_rmse']:>15.4f}" for e in history]
    lines.append(f"metrics: {run.metrics}\nexports: {export_base or run.export} (one version per day)\n"
                 f"TensorBoard: tensorboard --logdir {run.tensorboard}")
    return "\n".join(lines)


def _read_metrics(path: str, done_day: int) -> list[dict]:
    """The metrics of the days already checkpointed (later lines belong to a day that did not finish)."""
    if not files.exists(path):
        return []
    return [e for e in map(json.loads, files.read_text(path).splitlines()) if e["evaluated_on_day"] <= done_day]
