"""The runner of a job run here: Beam's FnApiRunner, chosen outright.

Beam 2.77's DirectRunner first tries the Prism runner, a Go binary it downloads from GitHub on first
use. Without the network (this machine, CI, many clusters' edge nodes) every pipeline pays a failed
fetch (0.2-1.5 s measured here, twice per transform job) and then falls back to the FnApiRunner; with
the network, the job silently runs on another runner than the one it was tested on. The jobs run
batch pipelines the FnApiRunner supports, so a local run goes there directly, with the pipeline
options handed to its workers as DirectRunner hands them (`--direct_running_mode` and
`--direct_num_workers` keep their meaning; `multi_processing` workers read `--beam_plugins` from them).
"""

from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.runners.runner import PipelineRunner

# The name `--runner` takes for it (Beam imports a dotted name).
NAME = f"{__name__}.LocalRunner"


class LocalRunner(PipelineRunner):
    """DirectRunner's FnApiRunner path, without the attempt at Prism."""

    def run_pipeline(self, pipeline, options):
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        provision_info = fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return fn_runner.FnApiRunner(provision_info=provision_info).run_pipeline(pipeline, options)
