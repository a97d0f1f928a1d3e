"""Apache Beam pipelines: SID materialisation and the TF Transform job."""
