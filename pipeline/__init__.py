"""The Semantic-ID ranking system's own code, in layers whose imports only point down.

  core/    1. base: feature keys, contracts and their row rules, the run layout (every artefact name),
              representations, versions and atomic publish, fingerprints, config flags, TF set-up
  data/    2. data: corpus, logs and SID table readers and writers, the simulator, the MovieLens loader
  sid/     3. SID features: SID text, SPM vocabulary, preprocessing_fn, item join, lookup and SID stats
           4. (top-level packages) models/, beam_jobs/, serving/
  stages/  5. the stages (simulate, train the RQ-VAE, lookups, day loop, experiment, predict, demo)
  cli.py   5. the `sidrec` command line: parses, calls stages, prints

tests/test_layers.py walks the imports and keeps the direction.
"""
