"""The `sidrec` command line: one subcommand per stage. It parses flags into typed configs, calls the
stage and prints; the stages live in pipeline/stages/ and beam_jobs/.

User errors (a missing file or stage output, a bad flag value, data that breaks a contract) end
with one line naming what is wrong and, for a missing stage output, the command that makes it.
"""

import argparse
import logging
import os
import sys

from pipeline.core import config_flags, startup_noise
from pipeline.core import features as fk
from pipeline.core.layout import DataLayout, RQVAELayout, RunLayout

DEFAULT_RUN_DIR = os.path.join("runs", "demo")


def _simulate(args) -> None:
    from pipeline.data.simulator import SimulatorConfig
    from pipeline.stages import simulate

    run = RunLayout(args.run_dir)
    print(simulate.describe(simulate.run(config_flags.from_args(SimulatorConfig, args), run, args.through_day), run))


def _movielens(args) -> None:
    from beam_jobs import import_interactions
    from pipeline.data import log_summary, movielens

    layout = RunLayout(args.run_dir).data
    preset = import_interactions.movielens_preset(config_flags.from_args(movielens.MovieLensConfig, args), layout.root)
    summary = import_interactions.run(preset, args.beam_args)["summary"]
    print(log_summary.format_summary(summary))
    print(f"corpus: {layout.corpus}\nlogs:   {layout.logs}\nrejects: {layout.rejects}")


def _import(args) -> None:
    from beam_jobs import import_interactions

    config = config_flags.from_args(import_interactions.ImportConfig, args,
                                    output=args.output or RunLayout(args.run_dir).data.root)
    import_interactions.run(config, args.beam_args, log=print)


def _validate(args) -> None:
    from pipeline.data import corpus_io, log_io, log_summary

    layout = DataLayout(args.data_dir)
    rejects = None if args.strict else os.path.join(args.rejects_dir or layout.rejects, "validate")
    corpus = corpus_io.read_corpus(args.corpus or layout.corpus, embedding_dim=args.embedding_dim,
                                   rejects_path=rejects and rejects + "_corpus.jsonl")
    impressions = log_io.read_logs(layout, max_history=args.max_history,
                                   rejects_path=rejects and rejects + "_logs.jsonl")
    print(log_summary.format_summary(log_summary.summarise(impressions, corpus)))


def _train_rqvae(args) -> None:
    from models.rqvae import RQVAEConfig
    from pipeline.stages import train_rqvae

    layout = RunLayout(args.run_dir)
    report = train_rqvae.run(layout, config_flags.from_args(RQVAEConfig, args), corpus_path=args.corpus or None,
                             max_first_day=args.max_first_day)
    print(train_rqvae.describe(report, layout))


def _materialize(args) -> None:
    from beam_jobs import materialize_sids

    layout = RunLayout(args.run_dir)
    config = config_flags.from_args(materialize_sids.MaterializeConfig, args, corpus=args.corpus or layout.data.corpus,
                                    model=args.model or RQVAELayout(layout.rqvae).export,
                                    output=args.output or layout.sids)
    print(materialize_sids.describe(materialize_sids.run(config, args.beam_args)))


def _transform(args) -> None:
    from beam_jobs import transform
    from pipeline.core.representation import representation_name

    layout = RunLayout(args.run_dir)
    name = representation_name(args.kind, args.buckets, args.ngram, args.vocab_size, tuple(args.prefix_lengths),
                               args.id_buckets)
    config = config_flags.from_args(transform.TransformConfig, args, data_dir=args.data_dir or layout.data.root,
                                    sids=args.sids or layout.sids, output=args.output or layout.transform_output(name))
    print(transform.describe(transform.run(config, args.beam_args, log=print)))


def _lookups(args) -> None:
    from pipeline.stages import lookups

    print(lookups.describe(lookups.run(RunLayout(args.run_dir), config_flags.from_args(lookups.LookupsConfig, args))))


def _train(args) -> None:
    from models import distribution
    from pipeline.stages import day_loop

    config = config_flags.from_args(day_loop.TrainConfig, args)
    strategy = distribution.make_strategy(config_flags.from_args(distribution.DistributionConfig, args))
    layout = RunLayout(args.run_dir)
    output = os.path.join(layout.ranker, day_loop.run_dir_name(args.representation, config))
    history = day_loop.train(layout.transform_output(args.representation), output, config, args.export_dir or None,
                             args.model_name, if_changed=args.if_changed, strategy=strategy, rqvae_export=args.rqvae)
    if distribution.is_chief(strategy):
        print(day_loop.describe(history, output, args.export_dir or None))


def _daily(args) -> None:
    from models import distribution
    from pipeline.sid import sid_health
    from pipeline.stages import bless, daily, day_loop

    strategy = distribution.make_strategy(config_flags.from_args(distribution.DistributionConfig, args))
    daily.run(RunLayout(args.run_dir), config_flags.from_args(daily.DailyConfig, args),
              config_flags.from_args(day_loop.TrainConfig, args), config_flags.from_args(bless.BlessConfig, args),
              args.beam_args, strategy=strategy, health=config_flags.from_args(sid_health.HealthThresholds, args))


def _experiment(args) -> None:
    from pipeline.stages import day_loop, experiment

    results = experiment.run(RunLayout(args.run_dir), config_flags.from_args(experiment.ExperimentConfig, args),
                             config_flags.from_args(day_loop.TrainConfig, args), args.beam_args)
    print(experiment.describe(results))


def _study(args) -> None:
    from models.rqvae import RQVAEConfig
    from pipeline.stages import day_loop, study

    # The RQ-VAE keeps its defaults (its flags share names with the ranker's); each unit seeds it.
    results = study.run(study.StudyLayout(args.run_dir), config_flags.from_args(study.StudyConfig, args),
                        RQVAEConfig(), config_flags.from_args(day_loop.TrainConfig, args), args.beam_args)
    print(study.describe(results))


def _report(args) -> None:
    from pipeline.stages import report

    print(report.describe(report.run(RunLayout(args.run_dir), args.output)))


def _serve(args) -> None:
    from serving import server

    logging.getLogger("serving").setLevel(logging.INFO)  # version loads and swaps, whatever --verbose says
    server.serve(args)


def _reload_config(args) -> None:
    from pipeline.core import files
    from serving import client

    import grpc

    try:
        client.reload_config(args.server, files.read_text(args.model_config_file))
    except grpc.RpcError as e:
        raise ValueError(f"{args.server} refused {args.model_config_file} ({e.code().name}): {e.details()}; "
                         "it serves what it served before") from None
    print(f"{args.server} now serves {args.model_config_file}")


def _predict(args) -> None:
    from pipeline.stages import predict

    print(predict.describe(predict.run(RunLayout(args.run_dir), config_flags.from_args(predict.PredictConfig, args))))


def _refresh(args) -> None:
    from pipeline.stages import day_loop, refresh

    print(refresh.describe(refresh.run(RunLayout(args.run_dir), config_flags.from_args(refresh.RefreshConfig, args),
                                       config_flags.from_args(day_loop.TrainConfig, args), args.beam_args)))


def _health(args) -> None:
    from pipeline.stages import health

    print(health.describe(health.run(RunLayout(args.run_dir))))


def _browse(args) -> None:
    from pipeline.stages import browse

    print(browse.describe(browse.run(RunLayout(args.run_dir), config_flags.from_args(browse.BrowseConfig, args))))


def _demo(args) -> None:
    from models.rqvae import RQVAEConfig
    from pipeline.data.simulator import SimulatorConfig
    from pipeline.stages import demo

    # The RQ-VAE shares the simulator's --seed (its own seed flag is not offered here).
    demo.run(RunLayout(args.run_dir), config_flags.from_args(SimulatorConfig, args),
             config_flags.from_args(RQVAEConfig, args))


def build_parser(study_preset: str = "") -> argparse.ArgumentParser:
    """The `sidrec` parser; `study_preset` names the study.PRESETS entry whose values are the study's defaults."""
    # Configs only, from modules that import neither TensorFlow nor Beam: --help answers at once.
    from pipeline.core.configs import (SHIPPING_HELP, DistributionConfig, MaterializeConfig, RQVAEConfig,
                                       TransformConfig, add_server_flags)
    from pipeline.core.fingerprint import POLICIES
    from pipeline.core.representation import DEFAULT_SERVED
    from pipeline.data.interactions import ImportConfig, MovieLensConfig
    from pipeline.data.simulator import SimulatorConfig
    from pipeline.sid.sid_health import HealthThresholds
    from pipeline.stages.configs import (DEMO_WORLD, PRESETS, BlessConfig, BrowseConfig, DailyConfig, ExperimentConfig,
                                         LookupsConfig, PredictConfig, RefreshConfig, StudyConfig, TrainConfig)

    parser = argparse.ArgumentParser(
        prog="sidrec",
        description="Semantic IDs for ranking: simulate or load data, train the RQ-VAE tokenizer, "
                    "materialise SIDs with Beam, transform with TF Transform, train the ranker day by "
                    "day, and serve it over TF Serving's gRPC API. Every stage writes under --run_dir.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log progress at INFO level, with TensorFlow's own start-up logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, fn, help_text, run_dir=DEFAULT_RUN_DIR):
        sub = commands.add_parser(name, help=help_text, description=help_text,
                                  epilog=SHIPPING_HELP if name in BEAM_COMMANDS else None)
        sub.set_defaults(fn=fn)
        if run_dir:
            sub.add_argument("--run_dir", default=run_dir, help="run directory")
        return sub

    demo = command("demo", _demo, "run the whole pipeline on the built-in simulator, a small study with two "
                   "seeds and its report (writes runs/demo)")
    config_flags.add_flags(demo, SimulatorConfig, defaults=DEMO_WORLD)
    config_flags.add_flags(demo, RQVAEConfig, skip=("seed",))

    sim = command("simulate", _simulate, "generate a corpus and day-partitioned impression logs "
                  "into RUN_DIR/data and print the per-day summary with the oracle AUC")
    config_flags.add_flags(sim, SimulatorConfig)
    sim.add_argument("--through_day", type=int, default=0,
                     help="write the logs of days 1..D only, and the items that exist by day D; run again with a "
                          "later D and the same flags to have the next days arrive (rehearsing `sidrec daily`)")

    ml = command("movielens", _movielens, "turn MovieLens ratings + content embeddings into the "
                 "corpus and log contracts under RUN_DIR/data", run_dir=os.path.join("runs", "movielens"))
    config_flags.add_flags(ml, MovieLensConfig)

    im = command("import", _import, "Beam job: your interactions table (CSV, Parquet or JSON lines; --columns "
                 "user=...,item=...,time=...,click=...) and item table into the corpus and log contracts under "
                 "RUN_DIR/data (or --output): days by calendar, equal counts or rows; per user the watch item and the "
                 "history from the consumed items; rejects written aside (docs/your_data.md)")
    config_flags.add_flags(im, ImportConfig)

    rq = command("train-rqvae", _train_rqvae, "train the RQ-VAE on RUN_DIR/data/corpus.parquet, stop "
                 "when the reconstruction stops improving, export a frozen versioned SavedModel to "
                 "RUN_DIR/rqvae/export/<version> and print the SID quality report")
    rq.add_argument("--corpus", default="", help="corpus Parquet file (default: RUN_DIR/data/corpus.parquet)")
    rq.add_argument("--max_first_day", type=int, default=None,
                    help="train only on items with first_day <= this (default: every item); the "
                         "frozen model still gives SIDs to every item")
    config_flags.add_flags(rq, RQVAEConfig)

    mat = command("materialize", _materialize, "run the Beam job that gives every corpus item its SID "
                  "with the frozen RQ-VAE (RUN_DIR/sids: table/, tfrecord/, rejected/, stats.json); --corpus, "
                  "--model and --output default to RUN_DIR/data/corpus.parquet, RUN_DIR/rqvae/export and "
                  "RUN_DIR/sids. Other flags go to Beam: --runner=DataflowRunner --project ... --region ... "
                  "--temp_location gs://... --setup_file ./setup.py")
    config_flags.add_flags(mat, MaterializeConfig)

    tr = command("transform", _transform, "join the SIDs onto the logs and run TF Transform for one item "
                 "representation: analyse the training window, days before --eval_from (learning the "
                 "SentencePiece vocabulary for sid_spm), and transform every day into RUN_DIR/transform/<name> "
                 "(random_hash_8192, dense, sid_2gram, sid_spm_8192...); --data_dir, --sids and --output default "
                 "to RUN_DIR/data, RUN_DIR/sids and that. Other flags go to Beam")
    config_flags.add_flags(tr, TransformConfig)

    lk = command("lookups", _lookups, "embedding lookups per item by popularity bucket for random hashing, "
                 "every N-gram and SentencePiece at several table sizes (the paper's Figure 4), from the "
                 "training days' impressions: RUN_DIR/metrics/lookups.json and a plot")
    config_flags.add_flags(lk, LookupsConfig)

    tn = command("train", _train, "train the ranker day by day on RUN_DIR/transform/<name>, evaluating CTR AUC "
                 "and CTR/1D AUC on each evaluation day before fitting on it, into RUN_DIR/ranker/<run>-<config "
                 "hash>; resumes after the last finished day")
    tn.add_argument("--representation", default=DEFAULT_SERVED,
                    help="a transform output under RUN_DIR/transform/ (e.g. random_hash_8192, dense, sid_2gram, "
                         "sid_spm_8192)")
    tn.add_argument("--export_dir", default="",
                    help="export base: one SavedModel per day as <day>/ (default: RUN_DIR/ranker/<run>/export)")
    tn.add_argument("--model_name", default="ranker", help="model name in the exports' warm-up requests")
    tn.add_argument("--rqvae", default="",
                    help="SID representations: the export version directory of the RQ-VAE that made the SID table, "
                         "if it moved from where the transform output records it (every export holds it, to "
                         "compute SIDs from content embeddings)")
    tn.add_argument("--if_changed", choices=POLICIES, default="rebuild",
                    help="when the run directory holds a run made from other inputs: rebuild it, or refuse")
    config_flags.add_flags(tn, TrainConfig)
    config_flags.add_flags(tn, DistributionConfig)

    dy = command("daily", _daily, "advance the run by every logged day it has not taken, one transaction a day: "
                 "new items get SIDs, the day is transformed with the graph fitted on the training window, the "
                 "ranker (RUN_DIR/ranker/<run>) evaluates it unseen and trains on it from its last checkpoint, and "
                 "the candidate is published to RUN_DIR/serving/<model>/<version> only when blessed against the "
                 "served version on held-out rows; one line per day (docs/operating.md). Other flags go to Beam")
    config_flags.add_flags(dy, DailyConfig)
    config_flags.add_flags(dy, BlessConfig)
    config_flags.add_flags(dy, HealthThresholds)
    config_flags.add_flags(dy, TrainConfig, defaults={"holdout_per_mille": 50})
    config_flags.add_flags(dy, DistributionConfig)

    ex = command("experiment", _experiment, "the paper's table: transform (or reuse) and train every arm day by "
                 "day with and without history on the same data, then print the %% change in CTR AUC and CTR/1D "
                 "AUC over the evaluation days against the baseline arm, beside the oracle AUC "
                 "(RUN_DIR/metrics/experiment.json and a plot). Other flags go to Beam")
    config_flags.add_flags(ex, ExperimentConfig)
    config_flags.add_flags(ex, TrainConfig)

    st = command("study", _study, "the paper's findings F1-F7 (and F8, churn) with seeds: each simulated world (--worlds) drawn "
                 "with S seeds, the core arms (and the matched table sizes and an RQ-VAE v1 in --matched_world), "
                 "and MovieLens with S model seeds and a bootstrap over users; every unit is reused when "
                 "unchanged (RUN_DIR/metrics/study.json). Other flags go to Beam", run_dir=os.path.join("runs", "study"))
    st.add_argument("--preset", default="", choices=["", *PRESETS],
                    help="a named set of the study's flag defaults (docs/study.md); flags given beside it win")
    config_flags.add_flags(st, StudyConfig, defaults=PRESETS.get(study_preset))
    config_flags.add_flags(st, TrainConfig, skip=("seed",))

    rp = command("report", _report, "one self-contained HTML page and its Markdown twin from RUN_DIR's study "
                 "(or its experiment): the table with intervals, the paper's figures, Table 1, per-day curves, "
                 "worlds, A/A differences, churn and F1-F8 verdicts computed from the results")
    rp.add_argument("--output", default="", help="directory of REPORT.md, report.html, the figures and "
                                                 "results.json (default: RUN_DIR/report)")

    sv = command("serve", _serve, "serve the daily exports over TF Serving's gRPC API (PredictionService, "
                 "ModelService) and, with --rest_api_port, its REST API: the versions each model's policy chooses, "
                 "swapped in as new ones appear, with version labels and Prometheus metrics", run_dir="")
    add_server_flags(sv)

    rc = command("reload_config", _reload_config, "send a running server (sidrec serve or tensorflow_model_server) "
                 "a new model_config_list over gRPC (ModelService.HandleReloadConfigRequest): version policies, "
                 "labels, models", run_dir="")
    rc.add_argument("--server", default="127.0.0.1:8500", help="the server's gRPC host:port")
    rc.add_argument("--model_config_file", required=True, help="text-format ModelServerConfig to apply")

    pr = command("predict", _predict, "rank candidates for a few users through a running server (gRPC): each "
                 "user's last watch and history of a logged day, the candidates they were shown (or --candidates)")
    config_flags.add_flags(pr, PredictConfig)

    rf = command("refresh", _refresh, "a new lineage beside the served one (an RQ-VAE of the served one's config on the "
                 "items up to the last logged day, its SIDs, the served representation with a vocabulary of the days before) and its "
                 "ranker warm-started from the served ranker: layers copied, the item table fitted to the served "
                 "item vectors; then `sidrec daily` on the new run directory. Other flags go to Beam")
    config_flags.add_flags(rf, RefreshConfig)
    config_flags.add_flags(rf, TrainConfig, defaults={"holdout_per_mille": 50})

    command("health", _health, "a lineage's health over its daily steps: new items' SID collisions and code spread "
            "against the lineage's, CTR/1D AUC, and the days a refresh was advised (table, and a figure in "
            "RUN_DIR/report)")

    bw = command("browse", _browse, "the items under a SID prefix with their titles, and the size of each child "
                 "(a sub-trie of the SID table, as the paper's Figures 6-7)")
    config_flags.add_flags(bw, BrowseConfig)

    val = command("validate", _validate, "check a corpus and its logs against the data contracts; "
                  "unusable rows are written aside with the reason (or raise with --strict)", run_dir="")
    val.add_argument("--data_dir", required=True, help="directory with corpus.parquet and logs/day=NNNN/")
    val.add_argument("--corpus", default="", help="corpus Parquet file (default: DATA_DIR/corpus.parquet)")
    val.add_argument("--embedding_dim", type=int, default=None, help="expected D (default: the most common)")
    val.add_argument("--max_history", type=int, default=fk.DEFAULT_MAX_HISTORY, help="history length cap H")
    val.add_argument("--rejects_dir", default="", help="where rejected rows go (default: DATA_DIR/rejects)")
    val.add_argument("--strict", action="store_true", help="fail on the first bad row instead")
    return parser


BEAM_COMMANDS = ("import", "movielens", "materialize", "transform", "daily", "refresh", "experiment", "study")


def main(argv: list[str] | None = None) -> int:
    # A study preset's values become the defaults (--help shows them); flags given beside it still win.
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--preset", default="")
    early.add_argument("-v", "--verbose", action="store_true")
    known = early.parse_known_args(argv)[0]
    if known.verbose:
        return _main(argv, known.preset)
    with startup_noise.filtered_stderr():
        return _main(argv, known.preset)


def _main(argv: list[str] | None, study_preset: str) -> int:
    parser = build_parser(study_preset=study_preset)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in BEAM_COMMANDS:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.beam_args = extra
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("apache_beam", "absl", "tensorflow"):  # their INFO lines drown the progress
        logging.getLogger(chatty).setLevel(logging.WARNING)
    startup_noise.quiet_known_warnings()
    try:
        args.fn(args)
    # ContractError and StaleOutputError are ValueErrors; MissingOutputError is a FileNotFoundError.
    except (ValueError, FileNotFoundError, ConnectionError) as e:
        print(f"sidrec {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    return 0


def _one_line(error: Exception) -> str:
    """The error's message on one line (an OSError from open() carries its path separately)."""
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"{error.filename}: {error.strerror or 'no such file'}"
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
