"""Beam pipeline options every job builds the same way, and what remote workers get of the project.

Every worker process first imports beam_jobs.worker_startup (`--beam_plugins`): the transform graph of
a sid_spm output holds TensorFlow Text's ops, which a fresh worker process has not registered.

A runner that runs workers elsewhere (Dataflow, Flink, Spark, ...) must ship this project to them:
`--setup_file` (the project's setup.py: workers pip-install it and its pinned TensorFlow family), or
`--sdk_container_image` (an image built from beam_jobs/Dockerfile, which has it installed). Given
neither, the project's own setup.py is shipped. The launcher says which, before the job starts.
"""

import logging
import os

from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions, WorkerOptions

from beam_jobs import local_runner
from pipeline.core.configs import SHIPPING_HELP  # noqa: F401  (the jobs' --help epilog)

# Imported by every worker process before any of the job's code (SentencePiece ops, file:// URLs).
WORKER_STARTUP = "beam_jobs.worker_startup"
DIRECT_RUNNERS = ("DirectRunner", "direct")
LOCAL_RUNNERS = (local_runner.NAME, "InteractiveRunner", "PrismRunner", "prism")  # DIRECT_RUNNERS become the first
PROJECT_SETUP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")


def pipeline_options(beam_args, log=logging.info, **overrides) -> PipelineOptions:
    """PipelineOptions from the job's Beam flags: DirectRunner unless a runner is given, and for a remote
    runner the project shipped to the workers (and said so)."""
    options = PipelineOptions(list(beam_args), **overrides)
    setup = options.view_as(SetupOptions)
    setup.beam_plugins = sorted(set(setup.beam_plugins or []) | {WORKER_STARTUP})
    standard = options.view_as(StandardOptions)
    if not standard.runner or standard.runner in DIRECT_RUNNERS:
        standard.runner = local_runner.NAME  # DirectRunner's own engine, without its attempt at Prism
    if standard.runner in LOCAL_RUNNERS:
        return options
    image = options.view_as(WorkerOptions).sdk_container_image
    if image:
        log(f"{standard.runner}: workers run the container image {image} (the project installed in it)")
    else:
        setup.setup_file = setup.setup_file or PROJECT_SETUP
        log(f"{standard.runner}: shipping the project to the workers as an sdist of {setup.setup_file} "
            "(packages pipeline, models, beam_jobs, serving; the TensorFlow family pinned in it)")
    return options
