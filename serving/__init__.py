"""SavedModel export signatures, the TF Serving-compatible server (gRPC and REST) and its client."""
