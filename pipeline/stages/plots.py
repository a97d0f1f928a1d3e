"""Pictures for the run report (PNG files under RUN_DIR/report/), drawn with matplotlib's Agg backend."""

import io
import math
import re

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pipeline.core import files  # noqa: E402


def _save(fig, path: str) -> str:
    for ax in fig.axes:  # days, epochs, levels and prefix lengths are whole numbers
        if not ax.get_xticklabels() or not ax.get_xticklabels()[0].get_text():
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, dpi=110, format="png")
    files.write_bytes(path, image.getvalue())
    plt.close(fig)
    return path


def log_summary(summary: dict, path: str) -> str:
    """Per day: CTR and cold-start share, and the oracle AUC (overall and cold start) if known."""
    days = [d["day"] for d in summary["per_day"]]
    has_oracle = "oracle_auc" in summary["per_day"][0]
    fig, axes = plt.subplots(1, 2 if has_oracle else 1, figsize=(11 if has_oracle else 6, 3.6), squeeze=False)
    ax = axes[0][0]
    ax.plot(days, [d["ctr"] for d in summary["per_day"]], marker="o", label="CTR")
    ax.plot(days, [d["cold_start_share"] for d in summary["per_day"]], marker="s", label="cold-start share")
    ax.set_xlabel("day")
    ax.set_title(f"{summary['impressions']:,} impressions, {summary['items']:,} items")
    ax.legend()
    if has_oracle:
        ax = axes[0][1]
        ax.plot(days, [d["oracle_auc"] for d in summary["per_day"]], marker="o", label="all impressions")
        ax.plot(days, [d["oracle_auc_cold_start"] for d in summary["per_day"]], marker="s", label="cold start")
        ax.set_xlabel("day")
        ax.set_title("oracle CTR AUC (the ceiling for every model)")
        ax.legend()
    return _save(fig, path)


def rqvae_training(history: list[dict], path: str) -> str:
    """Per epoch: reconstruction loss, utilisation of each level, unique-SID ratio."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    axes[0].plot(epochs, [h["recon_loss"] for h in history])
    axes[0].set_title("reconstruction loss")
    for level in range(len(history[0]["utilisation"])):
        axes[1].plot(epochs, [h["utilisation"][level] for h in history], label=f"level {level + 1}")
    axes[1].set_title("codebook utilisation")
    axes[1].set_ylim(0, 1.02)
    axes[1].legend(fontsize="small")
    axes[2].plot(epochs, [h["unique_sid_ratio"] for h in history])
    axes[2].set_title("unique-SID ratio")
    axes[2].set_ylim(0, 1.02)
    for ax in axes:
        ax.set_xlabel("epoch")
    return _save(fig, path)


def sid_quality(report: dict, path: str) -> str:
    """The prefix-similarity table (with sub-trie sizes) and codebook use per level."""
    rows = [r for r in report["prefix_similarity"] if r["mean_cosine"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].plot([r["prefix_length"] for r in rows], [r["mean_cosine"] for r in rows], marker="o")
    for r in rows:
        axes[0].annotate(f"{r['subtrie_size_p25']:g}-{r['subtrie_size_p75']:g}",
                         (r["prefix_length"], r["mean_cosine"]), textcoords="offset points", xytext=(0, 6),
                         ha="center", fontsize="small")
    axes[0].set_xlabel("shared SID prefix length n")
    axes[0].set_title("mean pairwise cosine (labels: sub-trie size p25-p75)")
    levels = report["levels"]
    axes[1].bar([lv["level"] for lv in levels], [lv["utilisation"] for lv in levels])
    axes[1].set_ylim(0, 1.02)
    axes[1].set_xlabel("level")
    axes[1].set_title(f"codebook utilisation (unique SIDs {report['unique_sid_ratio']:.3f})")
    return _save(fig, path)


def lookups(rows: list[dict], path: str) -> str:
    """The paper's Figure 4: mean embedding lookups per item, per representation and bucket."""
    rows = [r for r in rows if "error" not in r]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 3.8))
    width = 0.25
    for offset, bucket in enumerate(("head", "torso", "tail")):
        ax.bar([i + (offset - 1) * width for i in range(len(rows))],
               [r[bucket]["mean_lookups_per_item"] or 0 for r in rows], width, label=bucket)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["representation"] for r in rows], rotation=20, ha="right")
    ax.set_ylabel("lookups per item")
    ax.set_title("embedding lookups per item by popularity (thirds of the impressions)")
    ax.legend()
    return _save(fig, path)


def experiment(results: dict, path: str) -> str:
    """The paper's Figures 2 and 3: % change in CTR AUC and CTR/1D AUC against the baseline, per setting.

    With several seeds, each bar carries its 95% interval (paired by seed) as an error bar.
    """
    settings = [s for s in (False, True) if any(r["use_history"] == s for r in results["rows"])]
    fig, axes = plt.subplots(1, len(settings), figsize=(6 * len(settings), 4), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        rows = [r for r in results["rows"] if r["use_history"] == setting]
        x = range(len(rows))
        for offset, key, name in ((-0.2, "ctr_auc_change_pct", "CTR AUC"), (0.2, "ctr_1d_auc_change_pct", "CTR/1D AUC")):
            cells = [r[key] for r in rows]
            errors = [[c["mean"] - c["ci95_low"] for c in cells], [c["ci95_high"] - c["mean"] for c in cells]]
            ax.bar([i + offset for i in x], [c["mean"] for c in cells], width=0.4, label=name,
                   yerr=errors if all(c["n"] > 1 for c in cells) else None, capsize=3)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(list(x), [r["label"].replace("_no_history", "") for r in rows], rotation=30, ha="right")
        ax.set_ylabel(f"% change vs {results['baseline']}")
        ax.set_title("with history" if setting else "without history")
        ax.legend()
    return _save(fig, path)


def per_day(results: dict, path: str) -> str:
    """CTR AUC and CTR/1D AUC by evaluation day, one line per arm and setting; the 95% interval over seeds shaded."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 4), squeeze=False)
    for ax, key, name in zip(axes[0], ("ctr_auc", "ctr_1d_auc"), ("CTR AUC", "CTR/1D AUC")):
        for row in results["rows"]:
            days = [d["day"] for d in row["per_day"]]
            cells = [d[key] for d in row["per_day"]]
            line, = ax.plot(days, [c["mean"] for c in cells], marker="o", label=row["label"])
            if all(c["n"] > 1 for c in cells):
                ax.fill_between(days, [c["ci95_low"] for c in cells], [c["ci95_high"] for c in cells],
                                color=line.get_color(), alpha=0.15)
        ax.set_xticks(days)
        ax.set_xlabel("evaluation day (evaluated before the model trains on it)")
        ax.set_ylabel(name)
        ax.set_title(f"{name} by day")
    axes[0][1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def _bars_with_errors(ax, positions, cells, width, label, color=None):
    errors = [[c["mean"] - c["ci95_low"] for c in cells], [c["ci95_high"] - c["mean"] for c in cells]]
    ax.bar(positions, [c["mean"] for c in cells], width=width, label=label, color=color, capsize=3,
           yerr=errors if all(c["n"] > 1 and math.isfinite(c["ci95_low"]) for c in cells) else None)


def table_sizes(rows: list[dict], sizes: list[int], baseline: str, path: str) -> str:
    """The paper's Figures 2-3: % change against the baseline per table size, one bar per representation at
    that size (random hashing, SPM, and unigram or bigram at their own sizes), 95% intervals as error bars.

    Args:
      rows: {"size", "representation", "ctr_auc_change_pct", "ctr_1d_auc_change_pct"} with history.
    """
    kinds = list(dict.fromkeys(r["family"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), squeeze=False)
    width = 0.8 / max(1, len(kinds))
    for ax, key, name in zip(axes[0], ("ctr_auc_change_pct", "ctr_1d_auc_change_pct"), ("CTR AUC", "CTR/1D AUC")):
        for k, family in enumerate(kinds):
            at = [(sizes.index(r["size"]), r) for r in rows if r["family"] == family and r["size"] in sizes]
            _bars_with_errors(ax, [i + (k - (len(kinds) - 1) / 2) * width for i, _ in at], [r[key] for _, r in at],
                              width, family)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(sizes)), [f"{s:,}" for s in sizes])
        ax.set_xlabel("embedding table rows")
        ax.set_ylabel(f"% change vs {baseline}")
        ax.set_title(f"{name}, with history")
        ax.legend(fontsize="small")
    return _save(fig, path)


def lookups_by_size(rows: list[dict], num_levels: int, path: str) -> str:
    """The paper's Figure 4: SPM's lookups per item against its table size, for head, torso, tail and mean;
    unigram's L and bigram's L/2 lookups as reference lines."""
    rows = sorted((r for r in rows if re.fullmatch(r"sid_spm_\d+", r["representation"]) and "error" not in r),
                  key=lambda r: r["table_rows"])
    fig, ax = plt.subplots(figsize=(7, 4))
    sizes = [r["table_rows"] for r in rows]
    for bucket in ("head", "torso", "tail"):
        ax.plot(sizes, [r[bucket]["mean_lookups_per_item"] for r in rows], marker="o", label=bucket)
    ax.plot(sizes, [r["mean_lookups_per_item"] for r in rows], marker="s", color="black", label="mean")
    ax.axhline(num_levels, linestyle="--", color="grey", label=f"unigram ({num_levels})")
    ax.axhline(num_levels // 2, linestyle=":", color="grey", label=f"bigram ({num_levels // 2})")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("SPM table rows")
    ax.set_ylabel("lookups per item")
    ax.set_title("SPM lookups per item by popularity")
    ax.legend(fontsize="small")
    return _save(fig, path)


def rqvae_versions(rows: list[dict], path: str) -> str:
    """The paper's Figure 5: CTR AUC and CTR/1D AUC of each SID arm with the SIDs of RQ-VAE v0 and v1."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    for ax, key, name in zip(axes[0], ("ctr_auc", "ctr_1d_auc"), ("CTR AUC", "CTR/1D AUC")):
        for offset, version in ((-0.2, "v0"), (0.2, "v1")):
            _bars_with_errors(ax, [i + offset for i in range(len(rows))], [r[f"{version}_{key}"] for r in rows], 0.4,
                              f"RQ-VAE {version}")
        lows = [r[f"{v}_{key}"]["ci95_low"] for r in rows for v in ("v0", "v1")]
        low = min(x for x in lows + [r[f"v0_{key}"]["mean"] for r in rows] if math.isfinite(x))
        ax.set_ylim(max(0.0, low - 0.02), None)
        ax.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=20, ha="right")
        ax.set_title(name)
        ax.legend(fontsize="small")
    return _save(fig, path)


def worlds(units: list[dict], labels: list[str], path: str) -> str:
    """% change of the core arms against each unit's baseline, one group of bars per unit (world or data set)."""
    fig, axes = plt.subplots(2, 1, figsize=(min(16, max(8, 1.4 * len(labels))), 7), squeeze=False)
    width = 0.8 / len(units)
    for ax, key, name in zip(axes[:, 0], ("ctr_auc_change_pct", "ctr_1d_auc_change_pct"), ("CTR AUC", "CTR/1D AUC")):
        for k, unit in enumerate(units):
            by_label = {r["label"]: r for r in unit["rows"]}
            at = [(i, by_label[label]) for i, label in enumerate(labels) if label in by_label]
            _bars_with_errors(ax, [i + (k - (len(units) - 1) / 2) * width for i, _ in at], [r[key] for _, r in at],
                              width, unit["name"])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        ax.set_ylabel(f"% change in {name}")
        ax.legend(fontsize="small", title="world / data")
    return _save(fig, path)


def calibration(rows: list[dict], path: str) -> str:
    """Predicted against observed CTR by score decile, one line per arm and setting (the diagonal: calibrated)."""
    fig, ax = plt.subplots(figsize=(6.5, 5))
    top = 0.0
    for row in rows:
        curve = row.get("reliability") or []
        if curve:
            predicted, observed = [c["predicted"] for c in curve], [c["observed"] for c in curve]
            top = max(top, *predicted, *observed)
            ax.plot(predicted, observed, marker="o", markersize=3, label=row["label"])  # labels name the setting
    ax.plot([0, top], [0, top], color="black", linestyle="--", linewidth=1, label="calibrated")
    ax.set_xlabel("mean predicted CTR (score decile)")
    ax.set_ylabel("observed CTR")
    ax.set_title("Calibration over the evaluation days")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def stability(rows: list[dict], path: str) -> str:
    """Churn between consecutive daily models on the fixed probe, per slice, one bar per arm with churn (95%
    intervals over seeds)."""
    measured = [r for r in rows if "churn_overall" in r]
    slices = ("overall", "tail", "new")
    fig, ax = plt.subplots(figsize=(min(16, max(6.5, 0.45 * len(measured) + 4)), 4.5))
    width = 0.8 / max(len(measured), 1)
    for i, row in enumerate(measured):  # 40 distinct colours: a study's arms outnumber one cycle's 10
        present = [s for s in slices if f"churn_{s}" in row]
        color = (plt.cm.tab20 if i < 20 else plt.cm.tab20b)(i % 20)
        _bars_with_errors(ax, [slices.index(s) + (i - (len(measured) - 1) / 2) * width for s in present],
                          [row[f"churn_{s}"] for s in present], width, row["label"], color)
    ax.set_xticks(range(len(slices)), ["all probe rows", "tail items", "new items"])
    ax.set_ylabel("mean |change of predicted CTR| between daily models")
    ax.set_title("Prediction churn between consecutive daily retrains (lower is more stable)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def health(steps: list[dict], path: str) -> str:
    """A lineage's health by daily step: new items' SID collisions and first-level spread against the lineage's,
    CTR/1D AUC and the untrained pieces; the steps that advised a refresh marked."""
    days = [s["day"] for s in steps]
    h = [s["health"] for s in steps]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    sid_days = [d for d, x in zip(days, h) if "collision_rate" in x]
    measured = [x for x in h if "collision_rate" in x]
    axes[0].plot(sid_days, [x["collision_rate"] for x in measured], marker="o", label="the day's new items")
    axes[0].plot(sid_days, [x["lineage_collision_rate"] for x in measured], linestyle="--", label="the lineage's items")
    axes[0].set_title("share of items whose full SID another item has")
    axes[1].plot(sid_days, [x["perplexity_ratio"][0] for x in measured], marker="o")
    axes[1].axhline(1.0, color="black", linewidth=1, linestyle="--")
    axes[1].set_title("new items' level-1 code spread / the lineage's")
    axes[2].plot(days, [x["ctr_1d_auc"] for x in h], marker="o")
    axes[2].set_title("CTR/1D AUC")
    counted = [(d, x) for d, x in zip(days, h) if "untrained_piece_share" in x]
    axes[3].plot([d for d, _ in counted], [x["untrained_piece_share"] for _, x in counted], marker="o",
                 label="every impression")
    axes[3].plot([d for d, _ in counted], [x["untrained_piece_share_new"] for _, x in counted], marker="o",
                 label="new items' impressions")
    axes[3].set_title("candidate pieces on rows no training looked up")
    axes[3].legend(fontsize=7)
    for ax in axes:
        for day, x in zip(days, h):
            if x["refresh_advised"]:
                ax.axvline(day, color="red", alpha=0.25, linewidth=6)
        ax.set_xlabel("day (red: refresh advised)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=7)
    return _save(fig, path)
