"""The `sidrec` command line: one subcommand per stage, each reading the previous stage's artefact."""

import argparse
import json
import logging
import os
import sys

from pipeline.core import config_flags
from pipeline.core import features as fk
from pipeline.core.layout import DataLayout, RunLayout

DEFAULT_RUN_DIR = os.path.join("runs", "demo")
# The demo's small version of the paper's table (the dense depth variants are left to `sidrec experiment`).
DEMO_ARMS = "random_hash:8192,dense:1,sid_ngram:1,sid_ngram:2,sid_spm:8192"


def _simulate(args) -> None:
    from pipeline.data import log_summary
    from pipeline.stages import simulate as simulate_job
    from pipeline.data.simulator import SimulatorConfig

    config = config_flags.from_args(SimulatorConfig, args)
    run = RunLayout(args.run_dir)
    layout = run.data
    summary = simulate_job.run(config, layout, report_dir=run.report)
    print(log_summary.format_summary(summary))
    print(f"corpus: {layout.corpus}\nlogs:   {layout.logs}\nsummary: {layout.summary}\nplot:   {summary['plot']}")


def _movielens(args) -> None:
    from pipeline.data import log_summary
    from pipeline.data import movielens

    config = config_flags.from_args(movielens.MovieLensConfig, args)
    layout = RunLayout(args.run_dir).data
    summary = movielens.run(config, layout)
    print(log_summary.format_summary(summary))
    print(f"corpus: {layout.corpus}\nlogs:   {layout.logs}\nrejects: {layout.rejects}")


def _validate(args) -> None:
    from pipeline.data import data_io
    from pipeline.data import log_summary

    layout = DataLayout(args.data_dir)
    rejects = None if args.strict else os.path.join(args.rejects_dir or layout.rejects, "validate")
    corpus = data_io.read_corpus(args.corpus or layout.corpus, embedding_dim=args.embedding_dim,
                                 rejects_path=rejects and rejects + "_corpus.jsonl")
    impressions = data_io.read_logs(layout, max_history=args.max_history,
                                    rejects_path=rejects and rejects + "_logs.jsonl")
    print(log_summary.format_summary(log_summary.summarise(impressions, corpus)))


def _train_rqvae(args) -> None:
    from models.rqvae import RQVAEConfig
    from pipeline.stages import train_rqvae as rqvae_job
    from pipeline.sid import sid_quality

    config = config_flags.from_args(RQVAEConfig, args)
    layout = RunLayout(args.run_dir)
    report = rqvae_job.run(layout, config, corpus_path=args.corpus or None,
                           max_first_day=args.max_first_day)
    print(sid_quality.format_report(report))
    print(f"RQ-VAE {report['rqvae_version']} exported to {report['export']}\n"
          f"report: {os.path.join(layout.rqvae, 'sid_quality.json')}\nplots:  {', '.join(report['plots'])}")


def _materialize(args) -> None:
    from beam_jobs import materialize_sids

    layout = RunLayout(args.run_dir)
    argv = ["--corpus", args.corpus or layout.data.corpus,
            "--model", args.model or os.path.join(layout.rqvae, "export"),
            "--output", args.output or layout.sids, *args.beam_args]
    if args.existing_table:
        argv += ["--existing_table", args.existing_table]
    summary = materialize_sids.run(argv)
    stats = summary["stats"]
    print("counters: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary["counters"].items())))
    utilisation = " ".join(f"{level['utilisation']:.0%}" for level in stats["levels"])
    print(f"SID table ({stats['rqvae_version']}): {summary['output']}; unique-SID ratio "
          f"{stats['unique_sid_ratio']:.4f}, utilisation per level {utilisation}")


def _transform(args) -> None:
    from beam_jobs import transform

    from pipeline.core.representation import representation_name

    layout = RunLayout(args.run_dir)
    output = args.output or os.path.join(layout.transform, representation_name(args.kind, args.buckets, args.ngram,
                                                                               args.vocab_size))
    summary = transform.run(transform.build_argv(args.data_dir or layout.data.root, args.sids or layout.sids, output,
                                                 args.kind, args.buckets, args.ngram, args.vocab_size,
                                                 args.eval_from, args.max_history, args.if_changed, args.beam_args),
                            log=print)
    print("counters: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary["counters"].items())))
    with open(os.path.join(output, transform.LOOKUPS_FILE), encoding="utf-8") as f:
        lookups = json.load(f)
    print(f"{summary['config'].name}: {summary['config'].table_rows:,} table rows; lookups per item "
          + ", ".join(f"{b} {lookups[b]['mean_lookups_per_item']:.2f}" for b in ("head", "torso", "tail")
                      if lookups[b]["mean_lookups_per_item"] is not None))
    print(f"transform output: {output}")


def _lookups(args) -> None:
    import numpy as np

    from pipeline.data import data_io
    from pipeline.sid import lookup_stats
    from pipeline.stages import plots
    from pipeline.core.protocol import split_days

    layout = RunLayout(args.run_dir)
    train_days = split_days(layout.data.days(), args.eval_from).train_window
    table = data_io.read_sid_table(os.path.join(args.sids or layout.sids, "table")).lookup()
    with open(os.path.join(args.sids or layout.sids, "stats.json"), encoding="utf-8") as f:
        codebook_size = json.load(f)["codebook_size"]
    logs = data_io.read_logs(layout.data, days=train_days)
    items, impressions = np.unique(logs.candidate_item_id, return_counts=True)
    known = np.array([i in table for i in items])
    rows = lookup_stats.sweep(impressions[known], np.stack([table[i] for i in items[known]]), codebook_size,
                              args.buckets, [int(v) for v in args.vocab_sizes.split(",") if v])
    os.makedirs(layout.metrics, exist_ok=True)
    path = os.path.join(layout.metrics, "lookups.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)
    print(f"{'representation':>20} {'rows':>10} {'head':>6} {'torso':>6} {'tail':>6}")
    for r in rows:
        if "error" in r:
            print(f"{r['representation']:>20} {r['table_rows']:>10,}  {r['error']}")
        else:
            print(f"{r['representation']:>20} {r['table_rows']:>10,} " + " ".join(
                f"{r[b]['mean_lookups_per_item']:>6.2f}" for b in ("head", "torso", "tail")))
    print(f"lookups: {path}\nplot:    {plots.lookups(rows, os.path.join(layout.report, 'lookups_per_item.png'))}")


def _train(args) -> None:
    from pipeline.stages import day_loop

    config = config_flags.from_args(day_loop.TrainConfig, args)
    layout = RunLayout(args.run_dir)
    transform_dir = os.path.join(layout.transform, args.representation)
    output = os.path.join(layout.ranker, day_loop.run_dir_name(args.representation, config))
    history = day_loop.train(transform_dir, output, config, args.export_dir or None, args.model_name,
                             if_changed=args.if_changed)
    print(f"{'day':>4} {'CTR AUC':>8} {'CTR/1D AUC':>10} {'engagement RMSE':>15}")
    for e in history:
        print(f"{e['evaluated_on_day']:>4} {e['ctr_auc']:>8.4f} {e['ctr_1d_auc']:>10.4f} {e['engagement_rmse']:>15.4f}")
    print(f"metrics: {os.path.join(output, day_loop.METRICS_FILE)}\n"
          f"exports: {args.export_dir or os.path.join(output, 'export')} (one version per day)\n"
          f"TensorBoard: tensorboard --logdir {os.path.join(output, day_loop.TENSORBOARD_DIR)}")


def _experiment(args) -> None:
    from pipeline.stages import day_loop
    from pipeline.stages import experiment

    config = config_flags.from_args(day_loop.TrainConfig, args)
    results = experiment.run(RunLayout(args.run_dir), experiment.parse_arms(args.arms), config, args.beam_args,
                             baseline=args.baseline, eval_from=args.eval_from, max_history=args.max_history,
                             if_changed=args.if_changed)
    print(experiment.format_table(results))
    print(f"results: {results['path']}\nplot:    {results['plot']}")
    return results


def _serve(args) -> None:
    from serving import server

    logging.getLogger("serving").setLevel(logging.INFO)  # version loads and swaps, whatever --verbose says
    server.serve(args)


def _predict(args) -> None:
    """Ranks logged candidates of a few users of one day through the gRPC server."""
    import numpy as np

    from pipeline.data import data_io
    from pipeline.core.representation import RepresentationConfig
    from pipeline.sid.serving_examples import ServingExampleBuilder, read_representation
    from serving.client import RankerClient

    layout = RunLayout(args.run_dir)
    config = RepresentationConfig(**read_representation(os.path.join(layout.transform, args.representation))["config"])
    builder = ServingExampleBuilder.for_run(layout, config)
    day = args.day or layout.data.days()[-1]
    logs = data_io.read_logs(layout.data, days=[day])
    users = [args.user] if args.user else list(dict.fromkeys(logs.user_id))[:args.users]
    client = RankerClient(args.server)
    try:
        for user in users:
            rows = np.flatnonzero(logs.user_id == user)
            if not len(rows):
                raise ValueError(f"user {user!r} has no impressions on day {day}")
            last = rows[-1]
            watch, history = logs.watch_item_id[last], logs.history(last)
            candidates = args.candidates.split(",") if args.candidates else list(dict.fromkeys(logs.candidate_item_id[rows]))
            clicked = set(logs.candidate_item_id[rows][logs.click[rows] == 1])
            ranked = client.rank(args.model_name, builder, watch, candidates, history)
            print(f"user {user} (day {day}): watching {watch}, {len(history)} history items; {len(candidates)} candidates")
            for i, r in enumerate(ranked, 1):
                print(f"  {i:>3}. {r.item_id:<14} click {r.click_probability:.3f}  engagement {r.engagement:.3f}"
                      + ("  (clicked)" if r.item_id in clicked else ""))
            missing = {k: v for k, v in builder.last_missing.items() if v}
            if missing:
                print(f"  items without a SID or embedding (served the OOV row): {missing}")
    finally:
        client.close()


def _demo(args) -> None:
    """The main job on the built-in simulator; later stages join as they are built."""
    print("== 1/4 simulate ==")
    _simulate(args)
    print("== 2/4 train the RQ-VAE tokenizer on the day-0 catalogue, freeze it, report SID quality ==")
    args.corpus, args.max_first_day = "", 0
    _train_rqvae(args)
    print("== 3/4 materialise the SIDs of every item with the frozen model (Beam, DirectRunner) ==")
    args.model, args.output, args.existing_table, args.beam_args = "", "", "", []
    _materialize(args)
    print("== 4/4 TF Transform: SentencePiece pieces of the SIDs, learned on the training window only ==")
    args.data_dir, args.sids, args.kind, args.buckets, args.ngram = "", "", "sid_spm", 8192, 2
    args.vocab_size, args.eval_from, args.max_history, args.if_changed = 8192, 0, fk.DEFAULT_MAX_HISTORY, "rebuild"
    _transform(args)
    print("== lookups per item by popularity, per representation (the paper's Figure 4) ==")
    args.vocab_sizes = "2048,8192,32768"
    _lookups(args)
    print("== the paper's table: each representation trained day by day; each evaluation day evaluated "
          "before the model trains on it ==")
    from pipeline.stages.day_loop import TrainConfig

    args.arms, args.baseline = DEMO_ARMS, ""
    for name, value in vars(TrainConfig()).items():
        setattr(args, name, value)
    results = _experiment(args)
    print("== serve the last sid_spm_8192 export over TF Serving's gRPC API; rank candidates for 3 users ==")
    from serving import server
    from serving.servables import ModelConfig

    export_base = os.path.join(next(r["run_dir"] for r in results["runs"] if r["label"] == "sid_spm_8192"), "export")
    grpc_server, manager, port = server.start([ModelConfig("ranker", export_base)])
    print(f"serving {export_base} (version {manager.servable('ranker').version}) on 127.0.0.1:{port}; the same with "
          f"the stock server: tensorflow_model_server --model_name=ranker --model_base_path={os.path.abspath(export_base)}")
    try:
        args.server, args.model_name, args.representation = f"127.0.0.1:{port}", "ranker", "sid_spm_8192"
        args.day, args.users, args.user, args.candidates = 0, 3, "", ""
        _predict(args)
    finally:
        manager.stop()
        grpc_server.stop(grace=1).wait()
    print("server stopped")


def _add_protocol_flags(parser: argparse.ArgumentParser) -> None:
    """The evaluation protocol and the reuse policy, shared by the stages that transform."""
    from pipeline.core.fingerprint import POLICIES

    parser.add_argument("--eval_from", type=int, default=0,
                        help="first evaluation day T+1: vocabularies and analyzers learn from days 1..T only, and "
                             "each day from T+1 on is evaluated before the model trains on it (default: the "
                             "second half of the days is evaluated)")
    parser.add_argument("--max_history", type=int, default=fk.DEFAULT_MAX_HISTORY,
                        help="history cap H of the log contract: rows with longer histories are rejected")
    parser.add_argument("--if_changed", choices=POLICIES, default="rebuild",
                        help="when an output exists but was made from other inputs: rebuild it, or refuse")


def build_parser() -> argparse.ArgumentParser:
    from models.rqvae import RQVAEConfig
    from pipeline.stages import experiment as experiment_defaults
    from pipeline.stages.day_loop import TrainConfig
    from pipeline.core.fingerprint import POLICIES
    from pipeline.data.movielens import MovieLensConfig
    from pipeline.core.representation import KINDS
    from pipeline.data.simulator import SimulatorConfig
    from serving.server import add_flags as add_server_flags

    parser = argparse.ArgumentParser(
        prog="sidrec",
        description="Semantic IDs for ranking: simulate or load data, train the RQ-VAE tokenizer, "
                    "materialise SIDs with Beam, transform with TF Transform, train the ranker day by "
                    "day, and serve it over TF Serving's gRPC API. Every stage writes under --run_dir.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, fn, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(fn=fn)
        return sub

    demo = command("demo", _demo, "run the whole pipeline on the built-in simulator (writes runs/demo)")
    demo.add_argument("--run_dir", default=DEFAULT_RUN_DIR, help="run directory")
    config_flags.add_flags(demo, SimulatorConfig)
    config_flags.add_flags(demo, RQVAEConfig, skip=("seed",))

    sim = command("simulate", _simulate, "generate a corpus and day-partitioned impression logs "
                  "into RUN_DIR/data and print the per-day summary with the oracle AUC")
    sim.add_argument("--run_dir", default=DEFAULT_RUN_DIR, help="run directory")
    config_flags.add_flags(sim, SimulatorConfig)

    ml = command("movielens", _movielens, "turn MovieLens ratings + content embeddings into the "
                 "corpus and log contracts under RUN_DIR/data")
    ml.add_argument("--run_dir", default=os.path.join("runs", "movielens"), help="run directory")
    config_flags.add_flags(ml, MovieLensConfig)

    rq = command("train-rqvae", _train_rqvae, "train the RQ-VAE on RUN_DIR/data/corpus.parquet, stop "
                 "when the reconstruction stops improving, export a frozen versioned SavedModel to "
                 "RUN_DIR/rqvae/export/<version> and print the SID quality report")
    rq.add_argument("--run_dir", default=DEFAULT_RUN_DIR, help="run directory")
    rq.add_argument("--corpus", default="", help="corpus Parquet file (default: RUN_DIR/data/corpus.parquet)")
    rq.add_argument("--max_first_day", type=int, default=None,
                    help="train only on items with first_day <= this (default: every item); the "
                         "frozen model still gives SIDs to every item")
    config_flags.add_flags(rq, RQVAEConfig)

    mat = command("materialize", _materialize, "run the Beam job that gives every corpus item its SID "
                  "with the frozen RQ-VAE (RUN_DIR/sids: table/, tfrecord/, rejected/, stats.json). "
                  "Other flags go to Beam: --runner=DataflowRunner --project ... --region ... "
                  "--temp_location gs://... --setup_file ./setup.py")
    mat.add_argument("--run_dir", default=DEFAULT_RUN_DIR, help="run directory")
    mat.add_argument("--corpus", default="", help="corpus file pattern (default: RUN_DIR/data/corpus.parquet)")
    mat.add_argument("--model", default="", help="RQ-VAE export (default: newest under RUN_DIR/rqvae/export)")
    mat.add_argument("--output", default="", help="SID table directory (default: RUN_DIR/sids)")
    mat.add_argument("--existing_table", default="", help="incremental: keep the SIDs of items in this table")

    tr = command("transform", _transform, "join the SIDs onto the logs and run TF Transform for one item "
                 "representation: analyse the training window, days before --eval_from (learning the "
                 "SentencePiece vocabulary for sid_spm), and transform every day into RUN_DIR/transform/<name> (random_hash_8192, dense, sid_2gram, "
                 "sid_spm_8192...). Other flags go to Beam")
    tr.add_argument("--run_dir", default=DEFAULT_RUN_DIR, help="run directory")
    tr.add_argument("--data_dir", default="", help="corpus + logs (default: RUN_DIR/data)")
    tr.add_argument("--sids", default="", help="SID table directory (default: RUN_DIR/sids)")
    tr.add_argument("--output", default="", help="default: RUN_DIR/transform/<name>")
    tr.add_argument("--kind", choices=KINDS, default="sid_spm",
                    help="item representation")
    tr.add_argument("--buckets", type=int, default=8192, help="random_hash buckets B")
    tr.add_argument("--ngram", type=int, default=2, help="sid_ngram N (must divide L)")
    tr.add_argument("--vocab_size", type=int, default=8192, help="sid_spm table size V")
    _add_protocol_flags(tr)

    lk = command("lookups", _lookups, "embedding lookups per item by popularity bucket for random hashing, "
                 "every N-gram and SentencePiece at several table sizes (the paper's Figure 4), from the "
                 "training days' impressions: RUN_DIR/metrics/lookups.json and a plot")
    lk.add_argument("--run_dir", default=DEFAULT_RUN_DIR, help="run directory")
    lk.add_argument("--sids", default="", help="SID table directory (default: RUN_DIR/sids)")
    lk.add_argument("--buckets", type=int, default=8192, help="random_hash buckets B")
    lk.add_argument("--vocab_sizes", default="2048,8192,32768,65536", help="SPM table sizes V")
    lk.add_argument("--eval_from", type=int, default=0, help="first evaluation day: lookups count the days "
                    "before it, the training window (default: the second half of the days is evaluated)")

    tn = command("train", _train, "train the ranker day by day on RUN_DIR/transform/<name>, evaluating CTR AUC "
                 "and CTR/1D AUC on each evaluation day before fitting on it, into RUN_DIR/ranker/<run>-<config "
                 "hash>; resumes after the last finished day")
    tn.add_argument("--run_dir", default=DEFAULT_RUN_DIR, help="run directory")
    tn.add_argument("--representation", default="sid_spm_8192",
                    help="a transform output under RUN_DIR/transform/ (e.g. random_hash_8192, dense, sid_2gram, "
                         "sid_spm_8192)")
    tn.add_argument("--export_dir", default="",
                    help="export base: one SavedModel per day as <day>/ (default: RUN_DIR/ranker/<run>/export)")
    tn.add_argument("--model_name", default="ranker", help="model name in the exports' warm-up requests")
    tn.add_argument("--if_changed", choices=POLICIES, default="rebuild",
                    help="when the run directory holds a run made from other inputs: rebuild it, or refuse")
    config_flags.add_flags(tn, TrainConfig)

    ex = command("experiment", _experiment, "the paper's table: transform (or reuse) and train every arm day by "
                 "day with and without history on the same data, then print the %% change in CTR AUC and CTR/1D "
                 "AUC over the evaluation days against the baseline arm, beside the oracle AUC "
                 "(RUN_DIR/metrics/experiment.json and a plot). Other flags go to Beam")
    ex.add_argument("--run_dir", default=DEFAULT_RUN_DIR, help="run directory")
    ex.add_argument("--arms", default=experiment_defaults.DEFAULT_ARMS,
                    help="comma-separated KIND[:VALUE]: random_hash:B, dense:DEPTH_MULTIPLIER, sid_ngram:N, sid_spm:V")
    ex.add_argument("--baseline", default="", help="the arm the %% changes are against, as in --arms "
                    "(default: the first random_hash arm)")
    _add_protocol_flags(ex)
    config_flags.add_flags(ex, TrainConfig)

    sv = command("serve", _serve, "serve the daily exports over TF Serving's gRPC API (PredictionService, "
                 "ModelService): the newest version of each model, swapped in as new ones appear")
    add_server_flags(sv)

    pr = command("predict", _predict, "rank candidates for a few users through a running server (gRPC): each "
                 "user's last watch and history of a logged day, the candidates they were shown (or --candidates)")
    pr.add_argument("--run_dir", default=DEFAULT_RUN_DIR, help="run directory (SID table, corpus, logs)")
    pr.add_argument("--server", default="127.0.0.1:8500", help="host:port of the server")
    pr.add_argument("--model_name", default="ranker", help="model name on the server")
    pr.add_argument("--representation", default="sid_spm_8192",
                    help="the representation the served model was trained on (RUN_DIR/transform/<name>)")
    pr.add_argument("--day", type=int, default=0, help="logged day to take users from (default: the last)")
    pr.add_argument("--users", type=int, default=3, help="how many users")
    pr.add_argument("--user", default="", help="one user id instead")
    pr.add_argument("--candidates", default="", help="comma-separated item ids instead of the logged ones")

    val = command("validate", _validate, "check a corpus and its logs against the data contracts; "
                  "unusable rows are written aside with the reason (or raise with --strict)")
    val.add_argument("--data_dir", required=True, help="directory with corpus.parquet and logs/day=NNNN/")
    val.add_argument("--corpus", default="", help="corpus Parquet file (default: DATA_DIR/corpus.parquet)")
    val.add_argument("--embedding_dim", type=int, default=None, help="expected D (default: the most common)")
    val.add_argument("--max_history", type=int, default=fk.DEFAULT_MAX_HISTORY, help="history length cap H")
    val.add_argument("--rejects_dir", default="", help="where rejected rows go (default: DATA_DIR/rejects)")
    val.add_argument("--strict", action="store_true", help="fail on the first bad row instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipeline.core.contracts import ContractError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("materialize", "transform", "experiment"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.beam_args = extra
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("apache_beam", "absl", "tensorflow"):  # their INFO lines drown the progress
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        args.fn(args)
    except (ContractError, ValueError, FileNotFoundError) as e:
        print(f"sidrec {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
