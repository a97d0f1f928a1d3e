"""`sidrec refresh`: a new lineage beside the served one, its ranker warm-started from the served ranker.

In NEW_RUN_DIR (its data linked to RUN_DIR's, or copied on an object store): an RQ-VAE trained on every item up
to the last logged day T, the SID table it makes, the served representation transformed with its vocabulary
learned on days before T, and a ranker run that starts from the served one (pipeline.stages.warm_start): the
trunk and heads copied, the item table fitted to the served item vectors, trained through T-1. `sidrec daily
--run_dir NEW_RUN_DIR --serving_dir RUN_DIR/serving/<model>` then trains it on day T, blesses it against the
served version and goes on day by day (docs/operating.md).
"""

import dataclasses
import os

from beam_jobs import materialize_sids, transform
from models.rqvae import RQVAEConfig
from pipeline.core import files
from pipeline.core.layout import RQVAELayout, RunLayout, rqvae_card
from pipeline.core.representation import RepresentationConfig
from pipeline.stages import day_loop, train_rqvae, warm_start
from pipeline.stages.configs import RefreshConfig  # noqa: F401  (re-exported)


def link_data(source: RunLayout, target: RunLayout) -> None:
    """The new lineage reads the served one's data: a link on a local disk, a copy on an object store."""
    files.makedirs(target.root)
    if files.is_local(target.root):
        if not os.path.lexists(target.data.root):  # local
            os.symlink(os.path.abspath(source.data.root), target.data.root)  # local
    elif not files.exists(target.data.root):
        files.copy_tree(source.data.root, target.data.root)


def served_rqvae_config(card: dict, layout: RunLayout) -> RQVAEConfig:
    """The config the served lineage's RQ-VAE was trained with (its export's card), so the refresh changes only the
    items it learns from."""
    export = card.get("rqvae", {}).get("export") or RQVAELayout(layout.rqvae).export
    versions = [export] if files.exists(rqvae_card(export)) else sorted(
        files.glob(os.path.join(export, "*")), key=lambda p: int(os.path.basename(p)) if os.path.basename(p).isdigit() else -1)
    exported = files.read_json(rqvae_card(versions[-1]))
    fields = exported.get("config") or exported  # exports made without a training card: the model's own fields
    known = {f.name for f in dataclasses.fields(RQVAEConfig)}
    return RQVAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in known})


def run(layout: RunLayout, config: RefreshConfig, train: day_loop.TrainConfig, beam_args=(), log=print) -> dict:
    """Fits the new lineage and warm-starts its ranker; returns where everything is and the fit's numbers."""
    served_transform = layout.transform_output(config.representation)
    served_run = config.served_run or os.path.join(layout.ranker, day_loop.run_dir_name(config.representation, train))
    served_card = day_loop.read_protocol_card(served_transform)
    new = RunLayout(config.new_run_dir)
    link_data(layout, new)
    last_day = layout.data.logged_days()[-1]
    log(f"== RQ-VAE on the items up to day {last_day} ({new.rqvae})")
    train_rqvae.run(new, served_rqvae_config(served_card, layout), max_first_day=last_day, log=lambda *_: None)
    materialize_sids.run(materialize_sids.MaterializeConfig(corpus=new.data.corpus, model=RQVAELayout(new.rqvae).export,
                                                            output=new.sids), beam_args)
    representation = RepresentationConfig(**served_card["config"])
    log(f"== transform {representation.name} with the vocabulary of days before {last_day}")
    summary = transform.run(transform.TransformConfig(
        data_dir=new.data.root, sids=new.sids, output=new.transform_output(representation.name),
        kind=representation.kind_name, buckets=representation.buckets, ngram=representation.ngram,
        vocab_size=representation.vocab_size, prefix_lengths=representation.prefix_lengths,
        id_buckets=representation.id_buckets or 1024, eval_from=last_day, max_history=representation.max_history),
        beam_args, log=lambda *_: None)
    new_run = os.path.join(new.ranker, day_loop.run_dir_name(representation.name, train))
    out = {"new_run_dir": new.root, "ranker_run": new_run, "transform": summary["output"], "start_day": last_day,
           "representation": representation.name, "start": config.start}
    if config.start == "history":  # `sidrec daily` trains the new ranker through every day
        return out
    log(f"== {config.start} start of {new_run}" + (f" from {served_run}" if config.start == "warm" else ""))
    return {**out, **warm_start.run(served_transform, served_run, summary["output"], new_run, train,
                                    start_day=last_day, served_sids=layout.sids, new_sids=new.sids, damp=config.damp,
                                    warm=config.start == "warm")}


def describe(result: dict) -> str:
    if result["start"] == "warm":
        ranker = (f"warm start: {result['items']:,} items' vectors carried over to {result['table_rows']:,} rows "
                  f"(relative error {result['relative_error']:.3f}); copied {', '.join(result['copied'])}; "
                  f"{result['ranker_run']} stands trained through day {result['trained_through_day']}")
    elif result["start"] == "cold":
        ranker = (f"cold start: {result['ranker_run']} newly initialised, trained through day "
                  f"{result['trained_through_day']}")
    else:
        ranker = "no ranker written: the first `sidrec daily` step trains it through every day"
    return (f"new lineage: {result['new_run_dir']} ({result['representation']}, its vocabulary from the days before "
            f"day {result['start_day']})\n{ranker}\nnext: sidrec daily --run_dir {result['new_run_dir']} "
            f"--representation {result['representation']} --serving_dir <the served lineage's serving directory>")
