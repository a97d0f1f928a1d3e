"""Layer 3, SID features: SID text, the SPM vocabulary, preprocessing_fn, the item join, statistics."""
