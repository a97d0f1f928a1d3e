"""Built-in impression simulator with the structure of a watch-next ranking log.

Items sit in a hierarchy of topics; their content embeddings are built from the topic path with
decreasing weights plus noise, so deeper shared prefixes mean more similar content. Clicks depend
on content (user-topic affinity, watch-candidate relatedness: the generalisation signal) and on a
per-item quality drawn independently of content (the memorisation signal). Popularity is Zipf,
new items arrive every day with a freshness boost, and user histories evolve from their clicks.
The true click probability is kept, so the oracle AUC bounds every model.

A drifting world (`drift_day`): from that day on, a share of the new items comes from a top-level
topic absent before (its own subtree of topic vectors), the content region an RQ-VAE fitted earlier
never saw. Everything before the drift is the non-drifting world's, draw for draw.

Everything is vectorised numpy and deterministic for a seed.
"""

import dataclasses
import string

import numpy as np

from pipeline.core.config_flags import flag

_ID_ALPHABET = np.array(list(string.ascii_letters + string.digits + "-_"))
# Named balances between the memorisation and the generalisation signals (SimulatorConfig.world).
WORLDS = {"content": 0.2, "balanced": 0.5, "memorisation": 0.8}


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    """Sizes and effect strengths of the simulated world (defaults: the demo scale)."""

    seed: int = flag(0, "random seed: the same seed gives the same data")
    num_items: int = flag(20_000, "items in the corpus, including those that arrive later")
    num_users: int = flag(5_000, "users")
    num_days: int = flag(10, "days of impression logs (numbered 1..num_days)")
    impressions_per_day: int = flag(50_000, "impressions logged per day")
    embedding_dim: int = flag(256, "content embedding dimension D (the paper's is 2048)")
    topic_branching: tuple[int, ...] = flag((8, 8, 8, 8), "children per topic node, root to leaf "
                                                          "(>= 3 levels; the last: series of near-duplicates)")
    topic_weights: tuple[float, ...] = flag(
        (1.0, 0.7, 0.45, 0.3), "weight of each topic level's vector in an item's embedding")
    noise_weight: float = flag(0.3, "weight of the per-item noise in an item's embedding")
    initial_item_fraction: float = flag(0.6, "share of items in the corpus before day 1")
    zipf_exponent: float = flag(1.0, "exponent of the Zipf impression popularity")
    fresh_share: float = flag(0.08, "share of a day's impressions given to items introduced that day")
    freshness_boost: float = flag(1.0, "extra popularity of a new item, halving every half-life")
    freshness_half_life_days: float = flag(2.0, "half-life of the freshness boost, in days")
    related_share: float = flag(0.4, "share of candidates drawn from the watch item's level-2 topic")
    max_history: int = flag(20, "history length cap H")
    rounds_per_day: int = flag(4, "history updates per day (clicks enter histories between rounds)")
    base_ctr: float = flag(0.1, "click probability of an average impression before content effects")
    quality_std: float = flag(1.0, "std of the per-item quality logit (the memorisation signal)")
    affinity_weight: float = flag(3.0, "logit weight of user-topic affinity (generalisation signal)")
    relatedness_weight: float = flag(1.5, "logit weight of watch-candidate content similarity")
    user_bias_std: float = flag(0.3, "std of the per-user click bias logit")
    drift_day: int = flag(0, "first day whose new items may come from a top-level topic absent before (0: no drift)")
    drift_share: float = flag(0.5, "share of the new items from drift_day on that come from the new topic")
    world: str = flag("balanced", "balance b of the memorisation signal against the generalisation signals: "
                                  f"{', '.join(f'{k} ({v})' for k, v in WORLDS.items())} or a number in [0, 1]; "
                                  "quality_std is scaled by 2b, affinity and relatedness weights by 2(1 - b)")

    def __post_init__(self):
        positive = ("num_items", "num_users", "num_days", "impressions_per_day", "embedding_dim",
                    "max_history", "rounds_per_day")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.topic_branching) < 3:
            raise ValueError(f"topic_branching needs at least 3 levels, got {self.topic_branching}")
        if len(self.topic_weights) != len(self.topic_branching):
            raise ValueError(f"topic_weights {self.topic_weights} needs one weight per level of "
                             f"topic_branching {self.topic_branching}")
        if min(self.topic_branching) < 1:
            raise ValueError(f"topic_branching must be >= 1 per level, got {self.topic_branching}")
        for name in ("initial_item_fraction", "fresh_share", "related_share", "base_ctr"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.fresh_share + self.related_share >= 1.0:
            raise ValueError("fresh_share + related_share must leave room for popular candidates")
        self.balance  # refuses an unknown world early
        if not 0 <= self.drift_day <= self.num_days:
            raise ValueError(f"drift_day must be in [0, num_days {self.num_days}] (0: no drift), got {self.drift_day}")
        if not 0.0 < self.drift_share <= 1.0:
            raise ValueError(f"drift_share must be in (0, 1], got {self.drift_share}")
        if self.num_items * (1 - self.initial_item_fraction) < self.num_days:
            raise ValueError("too few new items: every day needs at least one new item")


    def fingerprint_fields(self) -> dict:
        """The config as fingerprints record it: the drift only when set, so worlds made before it existed keep
        their fingerprints."""
        fields = dataclasses.asdict(self)
        if not self.drift_day:
            del fields["drift_day"], fields["drift_share"]
        return fields

    @property
    def balance(self) -> float:
        """b in [0, 1]: 0 is clicks from content only, 1 from per-item quality only; 0.5 the defaults as given."""
        try:
            value = WORLDS[self.world] if self.world in WORLDS else float(self.world)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"world must be one of {', '.join(WORLDS)} or a number in [0, 1], got {self.world!r}")
        return value

    @property
    def signal_weights(self) -> tuple[float, float, float]:
        """(quality std, affinity weight, relatedness weight) after the world's balance."""
        memorisation, generalisation = 2.0 * self.balance, 2.0 * (1.0 - self.balance)
        return (self.quality_std * memorisation, self.affinity_weight * generalisation,
                self.relatedness_weight * generalisation)


@dataclasses.dataclass
class SimulatedData:
    """The simulator's output, as arrays; `pipeline.stages.simulate` writes it in the documented contracts.

    Item-indexed arrays have num_items rows; impression arrays have one row per impression,
    with item and user columns as indices into item_ids / user_ids (history padded with -1).
    """

    item_ids: np.ndarray  # str [num_items]
    embeddings: np.ndarray  # float32 [num_items, D], unit norm
    first_day: np.ndarray  # int64 [num_items], 0 = in the corpus before day 1
    topic_path: np.ndarray  # int64 [num_items, levels], node index at each level
    quality: np.ndarray  # float64 [num_items], logit effect, independent of content
    popularity: np.ndarray  # float64 [num_items], Zipf weight
    user_ids: np.ndarray  # str [num_users]
    day: np.ndarray  # int64 [n]
    user: np.ndarray  # int64 [n]
    watch: np.ndarray  # int64 [n]
    candidate: np.ndarray  # int64 [n]
    history: np.ndarray  # int64 [n, H], most recent first, -1 padded
    click: np.ndarray  # int64 [n]
    engagement: np.ndarray  # float32 [n]
    true_ctr: np.ndarray  # float32 [n]

    @property
    def num_impressions(self) -> int:
        return int(self.day.size)


def random_ids(rng: np.random.Generator, count: int, length: int) -> np.ndarray:
    """Opaque, unique random strings (like video IDs), drawn deterministically from rng."""
    ids = np.empty(0, dtype=f"<U{length}")
    while ids.size < count:
        chars = _ID_ALPHABET[rng.integers(0, _ID_ALPHABET.size, size=(count - ids.size, length))]
        fresh = chars.view(f"<U{length}").ravel()
        merged = np.concatenate([ids, fresh])
        _, first = np.unique(merged, return_index=True)
        ids = merged[np.sort(first)]
    return ids


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _topic_vectors(rng, config):
    """One random unit vector per topic node, per level."""
    sizes = np.cumprod(config.topic_branching)
    return [_unit(rng.standard_normal((n, config.embedding_dim))) for n in sizes]


def _content(rng, config, topic_vectors, leaf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Items' topic paths [N, levels] and unit content embeddings [N, D]: the path's vectors plus noise."""
    levels = len(config.topic_branching)
    topic_path = np.stack([leaf // int(np.prod(config.topic_branching[l + 1:])) for l in range(levels)], 1)
    embeddings = sum(w * vecs[topic_path[:, l]]
                     for l, (w, vecs) in enumerate(zip(config.topic_weights, topic_vectors)))
    embeddings = embeddings + config.noise_weight * _unit(rng.standard_normal((leaf.size, config.embedding_dim)))
    return topic_path, _unit(embeddings).astype(np.float32)


# The drift's own random stream, so the world before the drift is the non-drifting world's.
_DRIFT_STREAM = 7919


def _drift(config: SimulatorConfig, topic_vectors: list, topic_path: np.ndarray, embeddings: np.ndarray,
           first_day: np.ndarray) -> tuple[list, np.ndarray, np.ndarray]:
    """Topic vectors with one more top-level subtree (appended at every level), and the items that arrive from
    drift_day on moved into it with probability drift_share: their topic paths and embeddings redrawn."""
    rng = np.random.default_rng([config.seed, _DRIFT_STREAM])
    branching = config.topic_branching
    subtree = [_unit(rng.standard_normal((int(np.prod(branching[1:level + 1])), config.embedding_dim)))
               for level in range(len(branching))]
    extended = [np.concatenate([vectors, more]) for vectors, more in zip(topic_vectors, subtree)]
    moved = (first_day >= config.drift_day) & (rng.random(first_day.size) < config.drift_share)
    # Leaf n_leaves + j lies in the new subtree at every level (_content's path arithmetic appends its nodes).
    leaf = topic_vectors[-1].shape[0] + rng.integers(0, subtree[-1].shape[0], size=int(moved.sum()))
    topic_path, embeddings = topic_path.copy(), embeddings.copy()
    topic_path[moved], embeddings[moved] = _content(rng, config, extended, leaf)
    return extended, topic_path, embeddings


def arrivals(config: SimulatorConfig, count: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`count` items of the world `config` simulates that arrive after its last day: ids ("new-...") and
    embeddings. Their content is drawn as the corpus's (a leaf topic each, uniformly), from the world's
    own topic vectors, so an RQ-VAE trained on the corpus gives them meaningful SIDs."""
    topic_vectors = _topic_vectors(np.random.default_rng(config.seed), config)  # simulate()'s first draw
    rng = np.random.default_rng([config.seed, seed])
    leaf = rng.integers(0, topic_vectors[-1].shape[0], size=count)
    _, embeddings = _content(rng, config, topic_vectors, leaf)
    ids = np.array([f"new-{suffix}" for suffix in random_ids(rng, count, 8)], dtype=object)
    return ids, embeddings


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class _GroupSampler:
    """Draws items in proportion to weights within a group (a topic), vectorised over queries."""

    def __init__(self, groups: np.ndarray, weights: np.ndarray, num_groups: int):
        order = np.lexsort((np.arange(groups.size), groups))
        self._items = order
        self._cum = np.cumsum(weights[order])
        totals = np.bincount(groups, weights=weights, minlength=num_groups)
        self._start = np.concatenate([[0.0], np.cumsum(totals)[:-1]])
        self._total = totals

    def has_items(self, groups: np.ndarray) -> np.ndarray:
        return self._total[groups] > 0

    def sample(self, rng, groups: np.ndarray) -> np.ndarray:
        target = self._start[groups] + rng.random(groups.size) * self._total[groups]
        pos = np.searchsorted(self._cum, target, side="right")
        return self._items[np.minimum(pos, self._items.size - 1)]


def _weighted_choice(rng, weights: np.ndarray, size: int) -> np.ndarray:
    cum = np.cumsum(weights)
    pos = np.searchsorted(cum, rng.random(size) * cum[-1], side="right")
    return np.minimum(pos, weights.size - 1)


def _push_clicks(history, users, items):
    """Puts clicked items (in time order) at the front of each user's history, capped at H.

    Vectorised: each user's new history is their last k clicks, most recent first, followed by
    the first H - k entries of the old history.
    """
    if users.size == 0:
        return
    order = np.argsort(users, kind="stable")  # keeps time order within a user
    users, items = users[order], items[order]
    uniq, start, count = np.unique(users, return_index=True, return_counts=True)
    h = history.shape[1]
    j = np.arange(h)[None, :]
    k = np.minimum(count, h)[:, None]
    end = (start + count)[:, None]
    from_clicks = items[np.clip(end - 1 - j, 0, items.size - 1)]
    from_old = history[uniq[:, None], np.clip(j - k, 0, h - 1)]
    history[uniq] = np.where(j < k, from_clicks, from_old)


def simulate(config: SimulatorConfig = SimulatorConfig()) -> SimulatedData:
    """Generates a corpus and day-by-day impression logs, deterministically for config.seed."""
    rng = np.random.default_rng(config.seed)
    n_items = config.num_items

    # Items: a leaf topic each (leaves of uneven size), embedding from the topic path.
    topic_vectors = _topic_vectors(rng, config)
    n_leaves = topic_vectors[-1].shape[0]
    leaf = rng.choice(n_leaves, size=n_items, p=rng.dirichlet(np.full(n_leaves, 2.0)))
    topic_path, embeddings = _content(rng, config, topic_vectors, leaf)

    item_ids = random_ids(rng, n_items, 11)
    quality_std, affinity_weight, relatedness_weight = config.signal_weights
    quality = rng.normal(0.0, quality_std, n_items)
    popularity = 1.0 / rng.permutation(np.arange(1, n_items + 1)) ** config.zipf_exponent
    n_initial = int(round(config.initial_item_fraction * n_items))
    new_day = np.sort(rng.integers(1, config.num_days + 1, size=n_items - n_initial))
    new_day[:config.num_days] = np.arange(1, config.num_days + 1)  # every day brings new items
    first_day = rng.permutation(np.concatenate([np.zeros(n_initial, np.int64), np.sort(new_day)]))
    if config.drift_day:
        topic_vectors, topic_path, embeddings = _drift(config, topic_vectors, topic_path, embeddings, first_day)

    # Users: tastes over a few level-2 topics, an activity level, a click bias.
    n_users = config.num_users
    user_ids = random_ids(rng, n_users, 10)
    n_l2 = int(np.prod(config.topic_branching[:2]))  # users' tastes: the topics before any drift
    interests = rng.integers(0, n_l2, size=(n_users, 3))
    interest_weights = rng.dirichlet(np.ones(3), size=n_users)
    l2_parent = np.arange(n_l2) // config.topic_branching[1]
    taste = (interest_weights[:, :, None] * (
        config.topic_weights[0] * topic_vectors[0][l2_parent[interests]]
        + config.topic_weights[1] * topic_vectors[1][interests])).sum(1)
    taste = _unit(taste)
    activity = rng.lognormal(0.0, 0.7, n_users)
    user_bias = rng.normal(0.0, config.user_bias_std, n_users)
    base_logit = np.log(config.base_ctr / (1 - config.base_ctr))

    # Initial histories: items from each user's interest topics in the day-0 corpus.
    h = config.max_history
    history = np.full((n_users, h), -1, dtype=np.int64)
    initial = first_day == 0
    l2_of_item = topic_path[:, 1]
    all_l2 = topic_vectors[1].shape[0]  # with the drift's topics
    sampler0 = _GroupSampler(l2_of_item, popularity * initial, all_l2)
    seeds = interests[np.arange(n_users)[:, None], rng.integers(0, 3, size=(n_users, h))].ravel()
    seeded = np.where(sampler0.has_items(seeds), sampler0.sample(rng, seeds),
                      _weighted_choice(rng, popularity * initial, seeds.size)).reshape(n_users, h)
    seed_len = rng.integers(max(1, h // 4), h + 1, size=n_users)
    history[:] = np.where(np.arange(h)[None, :] < seed_len[:, None], seeded, -1)

    columns = {k: [] for k in ("day", "user", "watch", "candidate", "history", "click",
                               "engagement", "true_ctr")}
    per_round = np.diff(np.linspace(0, config.impressions_per_day, config.rounds_per_day + 1).astype(int))
    for day in range(1, config.num_days + 1):
        age = np.maximum(day - first_day, 0)
        available = first_day <= day
        weight = popularity * available * (1 + config.freshness_boost * 0.5 ** (age / config.freshness_half_life_days))
        fresh = first_day == day
        related_sampler = _GroupSampler(l2_of_item, weight, all_l2)
        for n in per_round:
            users = _weighted_choice(rng, activity, n)
            hist = history[users]
            hist_len = (hist >= 0).sum(1)
            pick = np.minimum(rng.geometric(0.5, n) - 1, hist_len - 1)
            watch = hist[np.arange(n), pick]

            source = rng.random(n)
            candidate = _weighted_choice(rng, weight, n)
            is_fresh = source < config.fresh_share
            candidate[is_fresh] = np.flatnonzero(fresh)[_weighted_choice(rng, popularity[fresh], int(is_fresh.sum()))]
            is_related = (source >= config.fresh_share) & (source < config.fresh_share + config.related_share)
            groups = l2_of_item[watch[is_related]]
            candidate[is_related] = related_sampler.sample(rng, groups)

            affinity = np.einsum("nd,nd->n", taste[users], embeddings[candidate])
            relatedness = np.einsum("nd,nd->n", embeddings[watch], embeddings[candidate])
            logit = (base_logit + quality[candidate] + user_bias[users]
                     + affinity_weight * (affinity - 0.3)
                     + relatedness_weight * (relatedness - 0.3))
            p = _sigmoid(logit)
            click = (rng.random(n) < p).astype(np.int64)
            # Watch fraction of a click: Beta around a mean that rises with p.
            mean = 0.15 + 0.8 * p
            engagement = click * rng.beta(8 * mean, 8 * (1 - mean))

            for key, value in (("day", np.full(n, day)), ("user", users), ("watch", watch),
                               ("candidate", candidate), ("history", hist), ("click", click),
                               ("engagement", engagement.astype(np.float32)),
                               ("true_ctr", p.astype(np.float32))):
                columns[key].append(value)
            clicked = click == 1
            _push_clicks(history, users[clicked], candidate[clicked])

    out = {k: np.concatenate(v) for k, v in columns.items()}
    return SimulatedData(item_ids=item_ids, embeddings=embeddings, first_day=first_day,
                         topic_path=topic_path, quality=quality, popularity=popularity,
                         user_ids=user_ids, **out)
