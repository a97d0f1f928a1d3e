"""`sidrec demo`: the whole pipeline on the built-in simulator, each stage called with its typed config,
then its small study (every arm with two model seeds) and the report of it."""

import os

from beam_jobs import materialize_sids, transform
from models.rqvae import RQVAEConfig
from pipeline.core.layout import RankerLayout, RQVAELayout, RunLayout
from pipeline.core.representation import DEFAULT_SERVED, Kind
from pipeline.data.simulator import SimulatorConfig
from pipeline.stages import day_loop, experiment, lookups, predict, report, simulate, train_rqvae
from serving import server
from serving.model_config import ModelConfig
from pipeline.stages.configs import DEMO_WORLD  # noqa: F401  (re-exported)

# The demo's small version of the paper's table (the dense depth variants are left to `sidrec study`), with two
# model seeds so every number carries an interval.
DEMO_ARMS = "random_hash:8192,dense:1,sid_ngram:1,sid_ngram:2,sid_spm:8192"
DEMO_SEEDS = 2
SERVED = DEFAULT_SERVED
# Items that arrive after the last SID materialisation: the demo ranks them from their content embeddings.
ARRIVALS = 2


def run(layout: RunLayout, simulator: SimulatorConfig, rqvae: RQVAEConfig, log=print) -> dict:
    """Simulate, train the RQ-VAE, materialise SIDs, transform, count lookups, run the table, serve, report;
    returns the table."""
    log("== 1/4 simulate ==")
    log(simulate.describe(simulate.run(simulator, layout), layout))
    log("== 2/4 train the RQ-VAE tokenizer on the day-0 catalogue, freeze it, report SID quality ==")
    log(train_rqvae.describe(train_rqvae.run(layout, rqvae, max_first_day=0), layout))
    log("== 3/4 materialise the SIDs of every item with the frozen model (Beam, DirectRunner) ==")
    log(materialize_sids.describe(materialize_sids.run(materialize_sids.MaterializeConfig(
        corpus=layout.data.corpus, model=RQVAELayout(layout.rqvae).export, output=layout.sids))))
    log("== 4/4 TF Transform: SentencePiece pieces of the SIDs, learned on the training window only ==")
    log(transform.describe(transform.run(transform.TransformConfig(
        data_dir=layout.data.root, sids=layout.sids, output=layout.transform_output(SERVED), kind=Kind.SID_SPM,
        vocab_size=8192), log=log)))
    log("== lookups per item by popularity, per representation (the paper's Figure 4) ==")
    log(lookups.describe(lookups.run(layout, lookups.LookupsConfig(vocab_sizes=(2048, 8192, 32768)))))
    log(f"== the paper's table: each representation trained day by day with {DEMO_SEEDS} seeds; each evaluation "
        "day evaluated before the model trains on it ==")
    results = experiment.run(layout, experiment.ExperimentConfig(arms=DEMO_ARMS, seeds=DEMO_SEEDS),
                             day_loop.TrainConfig(), log=log)
    log(experiment.describe(results))
    log(f"== serve the last {SERVED} export over TF Serving's gRPC API; rank candidates for 3 users, with "
        f"{ARRIVALS} items that arrived after the last SID materialisation among them (sent as content embeddings) ==")
    export_base = RankerLayout(next(r["run_dir"] for r in results["runs"] if r["label"] == SERVED)).export
    running = server.start([ModelConfig("ranker", export_base)])
    port = running.port
    log(f"serving {export_base} (version {running.manager.servable('ranker').version}) on 127.0.0.1:{port}; the same with "
        f"the stock server: tensorflow_model_server --model_name=ranker --model_base_path={os.path.abspath(export_base)}")
    arrived = simulate.write_arrivals(simulator, layout, ARRIVALS)
    log(f"{ARRIVALS} new items arrived after the SID table was made ({layout.data.arrivals}): "
        f"{', '.join(arrived.item_ids)}; none is in {layout.sids}")
    try:
        log(predict.describe(predict.run(layout, predict.PredictConfig(
            server=f"127.0.0.1:{port}", model_name="ranker", representation=SERVED, users=3,
            also_rank=tuple(arrived.item_ids), corpus=layout.data.arrivals))))
    finally:
        running.stop()
    log("server stopped")
    log("== the report of the small study: the table with intervals, the paper's figures, Table 1, F1-F8 verdicts ==")
    log(report.describe(report.run(layout)))
    return results
