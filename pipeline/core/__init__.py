"""Layer 1, the base: what every other layer shares (keys, contracts, layout, configs, TF set-up)."""
