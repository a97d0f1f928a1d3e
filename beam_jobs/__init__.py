"""Apache Beam pipelines: SID materialisation and the TF Transform job."""

import pipeline  # noqa: F401  (pins Keras 2 before TensorFlow is imported)
