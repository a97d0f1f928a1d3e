"""Small simulated worlds the tests share: Beam options, a tiny RQ-VAE, a run with SIDs, transforms."""

import os

from models.rqvae import RQVAEConfig
from pipeline.layout import RunLayout

IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
TINY = RQVAEConfig(encoder_dims=(32, 8), num_levels=4, codebook_size=16, batch_size=128, max_epochs=6,
                   patience=2, kmeans_iterations=5)


def small_run(root: str) -> RunLayout:
    """A simulated run of 3 days x 1,500 impressions with SIDs materialised by a tiny RQ-VAE."""
    from beam_jobs import materialize_sids
    from models import rqvae_savedmodel
    from pipeline import data_io, rqvae_job
    from pipeline.simulate_job import run as simulate_run
    from pipeline.simulator import SimulatorConfig

    layout = RunLayout(root)
    simulate_run(SimulatorConfig(num_items=1500, num_users=200, num_days=3, impressions_per_day=1500,
                                 embedding_dim=32), layout.data)
    corpus = data_io.read_corpus(layout.data.corpus)
    model, _ = rqvae_job.train(corpus.embeddings, TINY, lambda *_: None)
    export = rqvae_savedmodel.export(model, os.path.join(layout.rqvae, "export"))
    materialize_sids.run(["--corpus", layout.data.corpus, "--model", export, "--output", layout.sids, *IN_MEMORY])
    return layout


def run_transform(layout: RunLayout, kind: str, **flags) -> dict:
    """The transform job on `layout` into ROOT/<kind>; `flags` are transform.build_argv's (vocab_size=...)."""
    from beam_jobs import transform

    return transform.run(transform.build_argv(layout.data.root, layout.sids, os.path.join(layout.root, kind), kind,
                                              beam_args=IN_MEMORY, **flags))
