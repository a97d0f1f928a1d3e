"""Layer 2, data: readers and writers of the corpus, logs and SID table; the simulator; MovieLens."""
