"""SavedModel export signatures, the TF Serving-compatible gRPC server and its client."""
