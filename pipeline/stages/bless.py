"""Blessing a daily candidate before it is published: the candidate export against the served one.

Both are scored through their own serving signature (the SavedModel a server loads, transform graph
inside), each sent its own lineage's item features (a served version of another lineage gets content
embeddings and computes its own SIDs, see ItemFeatures), on the rows of the day that neither trained on:
the users the day loop held out of that day's training (pipeline.core.protocol.held_out); the served
model never saw the day at all. A candidate is blessed when every rule holds:
  - its scores on its own warm-up requests and on the held-out rows are finite, and not all the same
    (a diverged model saturates to one score);
  - its held-out CTR AUC is at least `min_auc`;
  - it is at most `max_auc_drop` below the served model's CTR AUC on the same rows;
  - its calibration (mean predicted CTR over the rows' click rate) is not outside [`min_calibration`,
    `max_calibration`] beyond the noise of the held-out click count (its 95% interval, the clicks taken
    as Poisson, lies outside the band): AUC cannot see a model whose scores are all twice too high, every
    use of the score as a probability can;
  - its normalized entropy (NE: log loss over the entropy of the rows' click rate) is not more than
    `max_ne_increase` above the served model's on the same rows beyond noise (the 95% interval of the
    increase, the rows' paired losses, lies above the margin).
A band applied to the point values alone would refuse good candidates of a small day for the noise of a
few hundred held-out rows.
The verdict keeps every number and, when not blessed, each reason.
"""


import numpy as np

from pipeline.core import features as fk
from pipeline.core.cards import read_export_card
from pipeline.core.layout import SidTableLayout
from pipeline.core.metrics import base_rate_entropy, binary_auc, calibration, normalized_entropy, row_log_losses
from pipeline.core.protocol import held_out_users
from pipeline.core.records import Impressions
from pipeline.core.representation import RepresentationConfig
from pipeline.core.tf_env import tf
from pipeline.data import corpus_io, sid_table_io
from pipeline.sid.serving_examples import ServingExampleBuilder
from serving.export import SERVING_DEFAULT, read_warmup
from pipeline.stages.configs import BlessConfig  # noqa: F401  (re-exported)

SCORE_BATCH = 1024


def held_out_rows(logs: Impressions, day: int, per_mille: int) -> Impressions:
    """The day's rows of the users the day loop left out of training that day."""
    return logs.select(held_out_users(logs.user_id.astype(str), day, per_mille))


class ItemFeatures:
    """What a request needs to name an item: SIDs from the table, content embeddings from the corpus (read
    only for a representation that sends them)."""

    def __init__(self, sids_dir: str, corpus_path: str):
        self._sids_dir, self._corpus_path = sids_dir, corpus_path
        self._sids, self._rqvae_version, self._embeddings = None, None, None

    def builder(self, config: RepresentationConfig, rqvae_version: str | None = None) -> ServingExampleBuilder:
        """Requests for an export of `config`. An export whose RQ-VAE (`rqvae_version`) did not make this SID
        table (the served version of another lineage, as after `sidrec refresh`) cannot read its codes: it is
        sent every item's content embedding and computes the SIDs its own lineage gives (serving.cold_start)."""
        if config.has_sids and self._sids is None:
            table = sid_table_io.read_sid_table(SidTableLayout(self._sids_dir).table)
            self._sids, self._rqvae_version = table.lookup(), table.rqvae_version
        foreign = config.has_sids and rqvae_version is not None and rqvae_version != self._rqvae_version
        embeddings = None
        if config.is_dense or foreign:
            if self._embeddings is None:
                corpus = corpus_io.read_corpus(self._corpus_path)
                self._embeddings = dict(zip(corpus.item_ids, corpus.embeddings))
            embeddings = self._embeddings
        return ServingExampleBuilder(config, self._sids if config.has_sids and not foreign else None, embeddings)


class ScoredExport:
    """One export, loaded once, scored through its serving signature as a server would run it."""

    def __init__(self, export_dir: str):
        self.export_dir = export_dir
        card = read_export_card(export_dir)
        self.config = RepresentationConfig(**card["config"])
        self.rqvae_version = (card.get("rqvae") or {}).get("version")  # the RQ-VAE whose SIDs it was trained on
        self._serve = tf.saved_model.load(export_dir).signatures[SERVING_DEFAULT]

    def scores(self, records: list[bytes]) -> np.ndarray:
        if not records:
            return np.zeros(0, np.float32)
        return np.concatenate([self._serve(examples=tf.constant(records[i:i + SCORE_BATCH]))[fk.CLICK_PROBABILITY]
                               .numpy() for i in range(0, len(records), SCORE_BATCH)])

    def held_out_scores(self, rows: Impressions, items: ItemFeatures) -> np.ndarray:
        """The click probabilities of `rows`, requested as a client would (its representation's features)."""
        builder = items.builder(self.config, self.rqvae_version)
        records = builder.serialize(list(rows.watch_item_id), list(rows.candidate_item_id),
                                    [rows.history(r) for r in range(rows.size)])
        return self.scores(records)

    def warmup_scores(self) -> np.ndarray:
        """The click probabilities of its own warm-up requests (what a server sends first)."""
        return np.concatenate([self.scores(list(tf.make_ndarray(request.inputs[fk.SERVING_INPUT])))
                               for request in read_warmup(self.export_dir)])


Z95 = 1.959964  # the standard normal's 97.5th percentile


def _quality(clicks: np.ndarray, scores: np.ndarray) -> dict:
    """AUC, NE and calibration of scores on rows holding both classes, the calibration's 95% interval from the
    Poisson noise of the click count."""
    predicted, observed = float(np.sum(scores, dtype=np.float64)), float(clicks.sum())
    half = Z95 * np.sqrt(observed)
    return {"auc": binary_auc(clicks, scores), "ne": normalized_entropy(clicks, scores),
            "calibration": calibration(clicks, scores),
            "calibration_ci95": [predicted / (observed + half), predicted / max(observed - half, 0.5)]}


def _ne_increase(clicks: np.ndarray, candidate: np.ndarray, served: np.ndarray) -> tuple[float, float]:
    """The candidate's NE minus the served model's on the same rows, and its 95% half-width (paired rows)."""
    difference = row_log_losses(clicks, candidate) - row_log_losses(clicks, served)
    entropy = base_rate_entropy(clicks)
    return (float(difference.mean() / entropy),
            float(Z95 * difference.std(ddof=1) / np.sqrt(difference.size) / entropy))


def bless(candidate: str, served: str | None, rows: Impressions, items: ItemFeatures, config: BlessConfig) -> dict:
    """The verdict on `candidate` against `served` (None: nothing served yet) on the held-out `rows`."""
    reasons = []
    export = ScoredExport(candidate)
    warmup = export.warmup_scores()
    if not np.isfinite(warmup).all():
        reasons.append(f"{int((~np.isfinite(warmup)).sum())} of {warmup.size} warm-up scores are not finite")
    scores = export.held_out_scores(rows, items)
    verdict = {"candidate": candidate, "served": served, "held_out_rows": int(rows.size),
               "candidate_auc": None, "served_auc": None, "candidate_ne": None, "served_ne": None,
               "candidate_calibration": None, "served_calibration": None, "candidate_calibration_ci95": None,
               "ne_increase": None, "ne_increase_ci95": None}
    clicks = np.asarray(rows.click)
    if not np.isfinite(scores).all():
        reasons.append(f"{int((~np.isfinite(scores)).sum())} of {scores.size} held-out scores are not finite")
    elif scores.size > 1 and np.ptp(scores) == 0:
        reasons.append(f"every held-out row gets the same score ({scores[0]:.4g}): a diverged or dead model")
    elif not 0 < clicks.sum() < clicks.size:
        reasons.append(f"the {rows.size} held-out rows hold one class only: raise --holdout_per_mille")
    else:
        mine = _quality(clicks, scores)
        verdict.update(candidate_auc=mine["auc"], candidate_ne=mine["ne"], candidate_calibration=mine["calibration"],
                       candidate_calibration_ci95=mine["calibration_ci95"])
        if mine["auc"] < config.min_auc:
            reasons.append(f"held-out CTR AUC {mine['auc']:.4f} is below the floor {config.min_auc:.4f}")
        low, high = mine["calibration_ci95"]
        if low > config.max_calibration or high < config.min_calibration:
            reasons.append(f"held-out calibration {mine['calibration']:.3f} (predicted / observed clicks; 95% interval "
                           f"[{low:.3f}, {high:.3f}] from {int(clicks.sum()):,} clicks) is outside "
                           f"[{config.min_calibration:g}, {config.max_calibration:g}]")
        if served:
            served_scores = ScoredExport(served).held_out_scores(rows, items)
            theirs = _quality(clicks, served_scores)
            verdict.update(served_auc=theirs["auc"], served_ne=theirs["ne"], served_calibration=theirs["calibration"])
            if mine["auc"] < theirs["auc"] - config.max_auc_drop:
                reasons.append(f"held-out CTR AUC {mine['auc']:.4f} is more than {config.max_auc_drop:g} below the "
                               f"served model's {theirs['auc']:.4f}")
            increase, half = _ne_increase(clicks, scores, served_scores)
            verdict.update(ne_increase=increase, ne_increase_ci95=[increase - half, increase + half])
            if increase - half > config.max_ne_increase:
                reasons.append(f"held-out NE {mine['ne']:.4f} is more than {config.max_ne_increase:g} above the "
                               f"served model's {theirs['ne']:.4f} (increase {increase:+.4f}, 95% interval "
                               f"[{increase - half:+.4f}, {increase + half:+.4f}])")
    verdict.update(blessed=not reasons, reasons=reasons)
    return verdict


def describe(verdict: dict) -> str:
    """One phrase: blessed or not, on what numbers, and why not."""
    numbers = (f"held-out AUC {verdict['candidate_auc']:.4f}" if verdict["candidate_auc"] is not None
               else "held-out AUC n/a")
    if verdict["served_auc"] is not None:
        numbers += f" vs served {verdict['served_auc']:.4f}"
    if verdict.get("candidate_ne") is not None:
        numbers += f", NE {verdict['candidate_ne']:.4f}"
        if verdict.get("served_ne") is not None:
            numbers += f" vs {verdict['served_ne']:.4f}"
        numbers += f", calibration {verdict['candidate_calibration']:.3f}"
    numbers += f" on {verdict['held_out_rows']:,} rows"
    return f"blessed ({numbers})" if verdict["blessed"] else f"not blessed: {'; '.join(verdict['reasons'])} ({numbers})"

