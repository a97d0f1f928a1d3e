"""Apache Beam pipelines: SID materialisation and the TF Transform job."""

from beam_jobs import gfile_filesystem  # noqa: F401  (registers file:// URLs with Beam's FileSystems)
