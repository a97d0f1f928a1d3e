"""SavedModel export signatures, the TF Serving-compatible gRPC server and its client."""

import pipeline  # noqa: F401  (pins Keras 2 before TensorFlow is imported)
