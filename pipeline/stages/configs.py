"""The typed configs of the stages, importable without TensorFlow or Beam.

The CLI builds every command's flags from these dataclasses (pipeline.core.config_flags), so `sidrec
COMMAND --help` answers without loading TensorFlow; each stage takes its config from here (and names it
again for its callers). The jobs' and models' configs are in pipeline/core/configs.py.
"""

import dataclasses

from pipeline.core import fingerprint
from pipeline.core.configs import TRUNKS
from pipeline.core.config_flags import flag
from pipeline.core.features import DEFAULT_MAX_HISTORY
from pipeline.core.protocol import HOLDOUT_BUCKETS
from pipeline.core.representation import DEFAULT_SERVED
from pipeline.data.interactions import ENV_VAR as MOVIELENS_ENV_VAR
from pipeline.data.simulator import WORLDS, SimulatorConfig


# ---- day_loop (pipeline/stages/day_loop.py)
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    embedding_dim: int = flag(32, "item table dimension")
    hidden_dims: tuple[int, ...] = flag((128, 64), "trunk widths")
    depth_multiplier: float = flag(1.0, "trunk depth: round(m x layers) layers at the base widths (1, 1.5, 2 "
                                        "for the dense baselines, as the paper's 1.5x-2x layers)")
    use_history: bool = flag(True, "feed the pooled history (the paper's two settings)")
    batch_size: int = flag(512, "examples per step")
    learning_rate: float = flag(0.005, "Adam learning rate of the dense layers")
    table_learning_rate: float = flag(0.02, "Adam learning rate of the item table (its own optimizer)")
    engagement_weight: float = flag(1.0, "weight of the engagement loss")
    trunk: str = flag("shared_bottom", f"multitask trunk: {' or '.join(TRUNKS)}")
    num_experts: int = flag(4, "experts of the mmoe trunk")
    seed: int = flag(0, "random seed")
    spm_dropout: float = flag(0.0, "sid_spm only: in training, each piece is replaced by its split into shorter "
                                   "vocabulary pieces with this probability (BPE-dropout style, deterministic per "
                                   "--seed), so the pieces new items fall back to are trained; evaluation and "
                                   "serving use the plain pieces")
    holdout_per_mille: int = flag(0, "rows of this many users per mille, drawn anew each day, are left out of "
                                     "training (still evaluated), so a daily candidate can be blessed on rows neither "
                                     "it nor the served model trained on; `sidrec daily` needs it above 0")

    def __post_init__(self):
        if self.batch_size < 1 or self.embedding_dim < 1:
            raise ValueError("batch_size and embedding_dim must be >= 1")
        if self.trunk not in TRUNKS:
            raise ValueError(f"trunk must be one of {TRUNKS}, got {self.trunk!r}")
        if not 0.0 <= self.spm_dropout <= 1.0:
            raise ValueError(f"spm_dropout must be in [0, 1], got {self.spm_dropout}")
        if not 0 <= self.holdout_per_mille < HOLDOUT_BUCKETS:
            raise ValueError(f"holdout_per_mille must be in [0, {HOLDOUT_BUCKETS}), got {self.holdout_per_mille}")


# ---- bless (pipeline/stages/bless.py)
@dataclasses.dataclass(frozen=True)
class BlessConfig:
    max_auc_drop: float = flag(0.005, "a candidate whose held-out CTR AUC is more than this below the served "
                                      "model's on the same rows is not published")
    min_auc: float = flag(0.5, "nor one whose held-out CTR AUC is below this floor")
    min_calibration: float = flag(0.8, "nor one whose held-out calibration (mean predicted CTR over the observed "
                                       "click rate) is below this beyond the noise of the held-out clicks (its 95%% "
                                       "interval below it)")
    max_calibration: float = flag(1.25, "or above this (its 95%% interval above it)")
    max_ne_increase: float = flag(0.01, "nor one whose held-out normalized entropy (log loss over the entropy of "
                                        "the rows' click rate) is more than this above the served model's beyond "
                                        "noise (the increase's 95%% interval above it)")

    def __post_init__(self):
        if self.max_auc_drop < 0 or not 0 <= self.min_auc <= 1:
            raise ValueError(f"--max_auc_drop must be >= 0 and --min_auc in [0, 1], got {self.max_auc_drop}, "
                             f"{self.min_auc}")
        if not 0 < self.min_calibration <= 1 <= self.max_calibration or self.max_ne_increase < 0:
            raise ValueError("need 0 < --min_calibration <= 1 <= --max_calibration and --max_ne_increase >= 0, got "
                             f"{self.min_calibration}, {self.max_calibration}, {self.max_ne_increase}")


# ---- daily (pipeline/stages/daily.py)
@dataclasses.dataclass(frozen=True)
class DailyConfig:
    representation: str = flag(DEFAULT_SERVED, "the transform output under RUN_DIR/transform/ whose fitted graph "
                                               "transforms each new day (made once by `sidrec transform`)")
    day: int = flag(0, "take this day only (0: every logged day the run has not taken, in order)")
    model_name: str = flag("ranker", "model name: the serving directory RUN_DIR/serving/<name> and the warm-up")
    serving_dir: str = flag("", "where blessed versions are published (default RUN_DIR/serving/MODEL_NAME)")
    keep_versions: int = flag(5, "published versions kept in the serving directory (the newest always)")
    model_config_file: str = flag("", "the model_config_list the servers of the serving directory read: the "
                                      "versions its labels and `specific` policy name for MODEL_NAME are never "
                                      "deleted, and `latest N` keeps at least N")

    def __post_init__(self):
        if self.keep_versions < 1:
            raise ValueError(f"--keep_versions must be >= 1 (the served version stays), got {self.keep_versions}")
        if self.day < 0:
            raise ValueError(f"--day must be a logged day (or 0 for every new one), got {self.day}")


# ---- refresh (pipeline/stages/refresh.py)
REFRESH_STARTS = ("warm", "cold", "history")


@dataclasses.dataclass(frozen=True)
class RefreshConfig:
    new_run_dir: str = flag("", "where the new lineage goes (its data linked to RUN_DIR's)")
    representation: str = flag(DEFAULT_SERVED, "the served representation (RUN_DIR/transform/<name>); the new "
                                               "lineage transforms the same kind and size")
    served_run: str = flag("", "the served ranker run (default: RUN_DIR/ranker/<the run `sidrec daily` trains with "
                               "these training flags>)")
    damp: float = flag(0.1, "LSQR damping of the new item table's rows (larger: rows few items use stay nearer 0)")
    start: str = flag("warm", "the new ranker: warm (from the served one, trained from the last day on), cold (a new "
                              "initialisation, trained from the last day on: the same budget) or history (none "
                              "written: `sidrec daily` trains it through every day)")

    def __post_init__(self):
        if not self.new_run_dir:
            raise ValueError("--new_run_dir is required: the new lineage goes beside the served one")
        if self.start not in REFRESH_STARTS:
            raise ValueError(f"--start must be one of {', '.join(REFRESH_STARTS)}, got {self.start!r}")


# ---- experiment (pipeline/stages/experiment.py)
DEFAULT_ARMS = "random_hash:8192,dense:1,dense:1.5,dense:2,sid_ngram:1,sid_ngram:2,sid_spm:8192"

HISTORY_SETTINGS = {"both": (True, False), "with": (True,), "without": (False,)}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """The arms and the protocol of one comparison (the ranker's own settings are a day_loop.TrainConfig)."""

    arms: str = flag(DEFAULT_ARMS, "comma-separated KIND[:VALUE][:OPTION=X...]: random_hash:B, dense:DEPTH_MULTIPLIER, "
                                   "sid_ngram:N, sid_spm:V, sid_prefix:B, and any SID kind as KIND+id (plus an ID "
                                   "table); options dropout=P (sid_spm: BPE-dropout-style splits in training), "
                                   "lengths=1-2-4 (sid_prefix's prefix lengths), ids=ROWS (the hybrid's ID table); "
                                   "`matched` adds dense 1x/1.5x/2x, unigram, bigram, and random hashing and SPM at "
                                   "unigram's and bigram's table sizes, one between, one above")
    id_buckets: int = flag(1024, "rows of the hybrids' (KIND+id) ID table, unless an arm says ids=ROWS")
    baseline: str = flag("", "the arm the %% changes are against, as in --arms (default: the first random_hash arm)")
    eval_from: int = flag(0, "first evaluation day T+1: vocabularies and analyzers learn from days 1..T only, and "
                             "each day from T+1 on is evaluated before the model trains on it (default: the "
                             "second half of the days is evaluated)")
    max_history: int = flag(DEFAULT_MAX_HISTORY,
                            "history cap H of the log contract: rows with longer histories are rejected")
    history: str = flag("both", "the history settings each arm trains in: both, with or without (dense arms "
                                "have no history: they always train without)")
    seeds: int = flag(1, "model seeds per arm: each arm and the baseline train with --seed, --seed + 1, ...; the "
                         "table then gives 95% intervals over the seeds and paired changes (same seed, same days)")
    if_changed: str = flag("rebuild", "when an output exists but was made from other inputs: rebuild it, or refuse "
                                      f"({' or '.join(fingerprint.POLICIES)})")

    def __post_init__(self):
        if self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {self.seeds}")
        if self.history not in HISTORY_SETTINGS:
            raise ValueError(f"--history must be one of {', '.join(HISTORY_SETTINGS)}, got {self.history!r}")
        if self.if_changed not in fingerprint.POLICIES:
            raise ValueError(f"--if_changed must be one of {', '.join(fingerprint.POLICIES)}, got {self.if_changed!r}")


# ---- study (pipeline/stages/study.py)
CORE_ARMS = DEFAULT_ARMS
SKIP = "none"  # --movielens_dir that leaves MovieLens out
WORLD_DRAWS = ("per_seed", "once")

# Named sets of flag defaults (`sidrec study --preset NAME`; flags given beside it still win).
PRESETS = {
    # F4 where it can appear: a world whose training window holds enough distinct SIDs (about 50k) for SPM
    # to reach bigram's (L/2) x K^2 = 131,072 pieces without a stand-in; sized to finish within 2 hours on
    # 2 cores, so one draw of the world, model seeds, a bootstrap over users, and the with-history arms only.
    "f4_at_scale": {
        # SPM 131,072 with dropout too: its coarse pieces are then looked up in training (docs/study.md).
        "arms": "random_hash:131072,sid_ngram:1,sid_ngram:2,sid_spm:1024,sid_spm:8192,sid_spm:131072,"
                "sid_spm:131072:dropout=0.1,sid_prefix:131072",
        "worlds": ("balanced",), "world_draws": "once", "history": "with", "matched_world": "",
        "num_items": 100_000, "num_users": 20_000, "num_days": 6, "impressions_per_day": 200_000,
        "content_dim": 256, "movielens_dir": SKIP},
    # F4 in the paper's regime: a vocabulary much smaller than the training window's distinct SIDs (about
    # 250,000 at a million items), so SPM 131,072 and 32,768 must split SIDs into shared pieces; sized to
    # finish within 2 hours on 2 cores (docs/study.md).
    "f4_at_a_million": {
        "arms": "random_hash:131072,sid_ngram:1,sid_ngram:2,sid_spm:1024,sid_spm:32768,sid_spm:131072",
        "worlds": ("balanced",), "world_draws": "once", "history": "with", "matched_world": "",
        "num_items": 1_000_000, "num_users": 100_000, "num_days": 6, "impressions_per_day": 500_000,
        "content_dim": 256, "movielens_dir": SKIP},
}


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    arms: str = flag(CORE_ARMS, "the arms of every unit, as `sidrec experiment --arms` (the matched world and "
                                "MovieLens add the matched table sizes)")
    worlds: tuple[str, ...] = flag(tuple(WORLDS), "simulated worlds, by name or balance in [0, 1] "
                                                  f"({', '.join(f'{k}={v}' for k, v in WORLDS.items())})")
    seeds: int = flag(3, "seeds per arm: world seed and model seed s = 0..S-1 in each world (model seeds on MovieLens)")
    world_draws: str = flag("per_seed", "per_seed: seed s draws world s and trains model s (t intervals over the "
                                        "seeds); once: one draw of each world (seed 0) with model seeds 0..S-1, "
                                        "intervals from a bootstrap over users and seeds, as on MovieLens")
    history: str = flag("both", "the history settings the arms train in: both, with or without")
    matched_world: str = flag("balanced", "the world that also runs the matched table sizes (Figures 2-3) and F7; "
                                                 "MovieLens runs the matched sizes too unless this is ''")
    num_items: int = flag(6_000, "items per simulated world")
    num_users: int = flag(1_500, "users per simulated world")
    num_days: int = flag(8, "days per simulated world")
    impressions_per_day: int = flag(15_000, "impressions per simulated day")
    content_dim: int = flag(64, "content embedding dimension D of the simulated worlds")
    movielens_dir: str = flag("", f"MovieLens files (default: ${MOVIELENS_ENV_VAR}, else ../shared/data/...); "
                                  f"`{SKIP}` leaves MovieLens out")
    bootstrap_replicates: int = flag(200, "bootstrap replicates over users and seeds (MovieLens)")

    def __post_init__(self):
        if self.seeds < 2:
            raise ValueError(f"--seeds must be >= 2 for intervals, got {self.seeds}")
        if self.world_draws not in WORLD_DRAWS:
            raise ValueError(f"--world_draws must be one of {', '.join(WORLD_DRAWS)}, got {self.world_draws!r}")
        if self.history not in HISTORY_SETTINGS:
            raise ValueError(f"--history must be one of {', '.join(HISTORY_SETTINGS)}, got {self.history!r}")
        if self.world_draws == "once" and self.matched_world:
            raise ValueError("--matched_world (its F7 pairs RQ-VAE v1 with v0 by world seed) needs "
                             "--world_draws per_seed; pass --matched_world '' with --world_draws once")
        if self.matched_world and self.matched_world not in self.worlds:
            raise ValueError(f"--matched_world {self.matched_world!r} is not one of --worlds {list(self.worlds)}")
        for world in self.worlds:  # fails early on a bad world name
            SimulatorConfig(world=world)

    def simulator(self, world: str, seed: int) -> SimulatorConfig:
        return SimulatorConfig(seed=seed, world=world, num_items=self.num_items, num_users=self.num_users,
                               num_days=self.num_days, impressions_per_day=self.impressions_per_day,
                               embedding_dim=self.content_dim)


# ---- lookups (pipeline/stages/lookups.py)
@dataclasses.dataclass(frozen=True)
class LookupsConfig:
    sids: str = flag("", "SID table directory (default: RUN_DIR/sids)")
    buckets: int = flag(8192, "random_hash and sid_prefix buckets B")
    vocab_sizes: tuple[int, ...] = flag((2048, 8192, 32768, 65536), "SPM table sizes V")
    id_buckets: int = flag(1024, "the hybrids' (KIND+id) ID table rows")
    spm_dropout: float = flag(0.1, "SPM dropout p whose training lookups are counted (0: none)")
    eval_from: int = flag(0, "first evaluation day: lookups count the days before it, the training window "
                             "(default: the second half of the days is evaluated)")


# ---- predict (pipeline/stages/predict.py)
@dataclasses.dataclass(frozen=True)
class PredictConfig:
    server: str = flag("127.0.0.1:8500", "host:port of the server")
    model_name: str = flag("ranker", "model name on the server")
    representation: str = flag(DEFAULT_SERVED, "the representation the served model was trained on "
                                               "(RUN_DIR/transform/<name>)")
    day: int = flag(0, "logged day to take users from (default: the last)")
    users: int = flag(3, "how many users")
    user: str = flag("", "one user id instead")
    candidates: tuple[str, ...] = flag((), "comma-separated item ids instead of the logged ones")
    also_rank: tuple[str, ...] = flag((), "comma-separated item ids ranked along with each user's candidates "
                                          "(e.g. items that arrived after the last SID materialisation)")
    corpus: str = flag("", "corpus file with the content embeddings of items missing from the SID table, sent "
                           "instead of their SIDs (default: RUN_DIR/data/corpus.parquet)")


# ---- browse (pipeline/stages/browse.py)
@dataclasses.dataclass(frozen=True)
class BrowseConfig:
    prefix: tuple[int, ...] = flag((), "SID prefix, comma-separated codes from the first level (e.g. 12,7); "
                                       "empty: the root")
    limit: int = flag(20, "items listed (the sub-trie's size is always given)")

    def __post_init__(self):
        if self.limit < 0:
            raise ValueError(f"--limit must be >= 0, got {self.limit}")


# ---- demo (pipeline/stages/demo.py)
# The demo's world: the simulator's, over 8 days of 20,000 impressions, so that two seeds fit in 10 minutes.
DEMO_WORLD = {"num_days": 8, "impressions_per_day": 20_000}
