"""Layer 5, the stages: each a function with a typed config, called by the CLI and the demo."""
