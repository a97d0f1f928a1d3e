"""`sidrec report`: one self-contained HTML page and a Markdown twin from a study (or one experiment).

The page holds the experiment table with 95% intervals per unit (a simulated world or a real data
set), the paper's Figures 2-5 (bars of % change per table size, lookups per item against table
size, RQ-VAE v0 against v1), Table 1 (similarity by shared SID prefix), the per-day curves, the
worlds side by side, the slices, calibration, prediction stability and A/A differences, two SID sub-tries
of a titled corpus, and the verdicts on F1-F8 (pipeline.stages.findings), computed from the results. results.json beside it
holds every number the page shows.
"""

import base64
import html
import re

from pipeline.core import files, stability, stats
from pipeline.core.layout import RQVAELayout, RunLayout
from pipeline.core.representation import HYBRID_SUFFIX, Kind
from pipeline.stages import browse, experiment, findings, plots

MARKDOWN, HTML, RESULTS = "REPORT.md", "report.html", "results.json"
METRICS = ("ctr_auc", "ctr_1d_auc", "ctr_auc_change_pct", "ctr_1d_auc_change_pct")
SUBTRIE_ITEMS = 8


def load_units(layout: RunLayout) -> tuple[list[dict], str]:
    """The units of RUN's study (metrics/study.json), else one unit from its experiment; and the source file."""
    if files.exists(layout.study):
        return files.read_json(layout.study)["units"], layout.study
    if not files.exists(layout.experiment):
        raise FileNotFoundError(f"{layout.root}: no study (metrics/study.json) or experiment "
                                "(metrics/experiment.json) to report; make one with `sidrec study` or `sidrec experiment`")
    results = files.read_json(layout.experiment)
    substituted = results.get("substituted", {})
    runs = experiment.by_requested_name(results["runs"], substituted)
    rows = experiment.with_aa_differences(experiment.summarise(runs), runs) if substituted else results["rows"]
    unit = {"name": files.basename(layout.root.rstrip("/")), "kind": "simulator" if results["oracle"] else "real",
            "seeds": results["seeds"], "interval": "t over model seeds, changes paired by seed",
            "baseline": results["baseline"], "substituted": {k: [v] for k, v in substituted.items()},
            "eval_from": results["eval_from"], "days": runs[0]["days"], "rows": rows, "runs": runs,
            "oracle": results["oracle"], "run_dirs": [layout.root]}
    for key, path in (("lookups", layout.lookups), ("sid_quality", RQVAELayout(layout.rqvae).sid_quality)):
        if files.exists(path):
            unit[key] = files.read_json(path)
    return [unit], layout.experiment


def run(layout: RunLayout, output: str = "") -> dict:
    """Writes OUTPUT (default RUN/report)/REPORT.md, report.html, results.json and the figures; returns paths."""
    units, source = load_units(layout)
    output = output or layout.report
    files.makedirs(output)
    for unit in units:
        unit["findings"] = findings.judge(unit)
    figures = _figures(units, output)
    subtries = [s for unit in units for s in _subtries(unit)]
    results = results_json(units, source)
    files.write_json(files.join(output, RESULTS), results)
    sections = _sections(units, figures, subtries)
    files.write_text(files.join(output, MARKDOWN), to_markdown(sections))
    files.write_text(files.join(output, HTML), to_html(sections, output))
    return {"markdown": files.join(output, MARKDOWN), "html": files.join(output, HTML),
            "results": files.join(output, RESULTS), "figures": [path for _, path in figures.values()],
            "findings": {u["name"]: {f["id"]: f["verdict"] for f in u["findings"]} for u in units}}


def describe(result: dict) -> str:
    lines = ["verdicts: " + "; ".join(f"{unit}: " + ", ".join(f"{k} {v}" for k, v in verdicts.items())
                                      for unit, verdicts in result["findings"].items())]
    lines.append(f"report:  {result['html']}\nmarkdown: {result['markdown']}\nresults: {result['results']}")
    return "\n".join(lines)


_NAMED_SIZE = re.compile(r"(?P<family>random_hash|sid_spm|sid_prefix)_(?P<size>\d+)(_l\d+)?(\+id_(?P<ids>\d+))?")
_NGRAM = re.compile(r"sid_(?P<n>\d+)gram(\+id_(?P<ids>\d+))?")


def table_size(representation: str, num_levels: int, codebook_size: int) -> int | None:
    """The nominal rows of a representation's table (the OOV row aside, a hybrid's ID rows in); None for dense."""
    family, size = representation_family(representation, num_levels, codebook_size)
    return size


def representation_family(representation: str, num_levels: int, codebook_size: int) -> tuple[str, int | None]:
    """(its family: the kind, `+id` for a hybrid, or "sid_ngram (its own size)"; its nominal table rows)."""
    named, ngram = _NAMED_SIZE.fullmatch(representation), _NGRAM.fullmatch(representation)
    match = named or ngram
    if not match:
        return representation, None
    ids = int(match["ids"] or 0)
    suffix = HYBRID_SUFFIX if match["ids"] else ""
    if named:
        return named["family"] + suffix, int(named["size"]) + ids
    n = int(ngram["n"])
    return f"sid_ngram{suffix} (its own size)", (num_levels // n) * codebook_size ** n + ids


def results_json(units: list[dict], source: str) -> dict:
    """Per unit (world or data set), arm and setting: each metric's mean, 95% interval and seeds; the verdicts."""
    out = {"source": source, "units": {}}
    for unit in units:
        levels, codes = _levels_codes(unit)
        rows = []
        for row in unit["rows"]:
            entry = {"arm": row["label"], "representation": row["representation"], "use_history": row["use_history"],
                     "depth_multiplier": row.get("depth_multiplier", 1.0), "spm_dropout": row.get("spm_dropout", 0.0),
                     "table_size": table_size(row["representation"], levels, codes) if levels else None,
                     "seeds": row["seeds"], "is_baseline": row["is_baseline"]}
            for key in METRICS:
                cell = row[key]
                entry[key] = {"mean": cell["mean"], "ci95_low": cell["ci95_low"], "ci95_high": cell["ci95_high"],
                              "seeds": cell["n"]}
            for key in ("ctr_ne", "calibration"):
                if key in row:
                    entry[key] = {k: row[key][k] for k in ("mean", "ci95_low", "ci95_high")} | {"seeds": row[key]["n"]}
            entry["aa_difference"], entry["seed_variance"] = row.get("aa_difference"), row.get("seed_variance")
            for key in experiment.CHURN:
                if key in row:
                    entry[key] = {k: row[key][k] for k in ("mean", "ci95_low", "ci95_high")} | {"seeds": row[key]["n"]}
            entry["slices"], entry["reliability"] = row.get("slices"), row.get("reliability")
            rows.append(entry)
        out["units"][unit["name"]] = {
            "kind": unit["kind"], "balance": unit.get("balance"), "interval": unit["interval"],
            "baseline": unit["baseline"], "substituted": unit.get("substituted", {}), "oracle": unit.get("oracle"),
            "rows": rows, "f7": unit.get("f7"),
            "findings": [{k: f[k] for k in ("id", "claim", "verdict", "evidence")} for f in unit["findings"]]}
    return out


def _levels_codes(unit: dict) -> tuple[int, int]:
    quality = unit.get("sid_quality") or {}
    return int(quality.get("num_levels", 0)), int(quality.get("codebook_size", 0))


def _figures(units: list[dict], output: str) -> dict:
    """{key: (caption, path)} of every figure, drawn into OUTPUT."""
    figures = {}

    def add(key, caption, draw):
        path = files.join(output, f"{key}.png")
        draw(path)
        figures[key] = (caption, path)

    if len(units) > 1:
        add("worlds", "% change against random hashing of the core arms in each world and data set (95% intervals)",
            lambda p: plots.worlds(units, _core_labels(units), p))
    for unit in units:
        name = unit["name"]
        sized = _sized_rows(unit)
        if sized:
            stand_ins = "; SPM sizes the data could not support show the vocabulary that stood in (" + ", ".join(
                f"{a}: {', '.join(sorted(set(b)))}" for a, b in unit["substituted"].items()) + ")" \
                if unit.get("substituted") else ""
            add(f"fig2_3_{name}", f"{name}: % change against {unit['baseline']} per table size, with history "
                                  f"(the paper's Figures 2-3){stand_ins}",
                lambda p, u=unit, s=sized: plots.table_sizes(s, sorted({r['size'] for r in s}), u["baseline"], p))
        else:
            add(f"fig2_3_{name}", f"{name}: % change against {unit['baseline']} per arm (the paper's Figures 2-3)",
                lambda p, u=unit: plots.experiment(u, p))
        if unit.get("lookups") and unit.get("sid_quality"):
            add(f"fig4_{name}", f"{name}: SPM lookups per item against table size (the paper's Figure 4)",
                lambda p, u=unit: plots.lookups_by_size(u["lookups"], _levels_codes(u)[0], p))
        if unit.get("f7"):
            add(f"fig5_{name}", f"{name}: ranking with the SIDs of RQ-VAE v0 and v1 (the paper's Figure 5)",
                lambda p, u=unit: plots.rqvae_versions(u["f7"], p))
        if all(r.get("per_day") for r in unit["rows"]):
            add(f"per_day_{name}", f"{name}: CTR AUC and CTR/1D AUC by evaluation day (95% interval shaded)",
                lambda p, u=unit: plots.per_day(u, p))
        if any("churn_overall" in r for r in unit["rows"]):
            add(f"stability_{name}", f"{name}: prediction churn between consecutive daily models on the fixed probe",
                lambda p, u=unit: plots.stability(u["rows"], p))
        if any(r.get("reliability") for r in unit["rows"]):
            add(f"calibration_{name}", f"{name}: predicted against observed CTR by score decile",
                lambda p, u=unit: plots.calibration(u["rows"], p))
    return figures


def _core_labels(units: list[dict]) -> list[str]:
    """The labels every unit has, in the first unit's order (its baseline left out: 0 by definition)."""
    common = set.intersection(*({r["label"] for r in u["rows"]} for u in units))
    return [r["label"] for r in units[0]["rows"] if r["label"] in common and not r["is_baseline"]]


def _sized_rows(unit: dict) -> list[dict]:
    """The with-history rows of table-sized representations, at the sizes where SPM or random hashing ran
    besides the baseline; empty unless the unit ran more than one size of them."""
    levels, codes = _levels_codes(unit)
    if not levels:
        return []
    rows = []
    for row in unit["rows"]:
        if not row["use_history"] or row["representation"] == Kind.DENSE.value:
            continue
        family, size = representation_family(row["representation"], levels, codes)
        rows.append({"size": size, "family": family, "representation": row["representation"],
                     **{key: row[key] for key in METRICS}})
    sizes = {r["size"] for r in rows if r["family"] == Kind.SID_SPM.value}
    return rows if len(sizes) > 1 else []


def _subtries(unit: dict) -> list[dict]:
    """Two sub-tries of a titled corpus: under the two most populous level-1 codes, their largest child."""
    if unit["kind"] != "real":
        return []
    catalogue = browse.load(RunLayout(unit["run_dirs"][0]))
    root = browse.under(catalogue, browse.BrowseConfig(prefix=(), limit=0))
    shown = []
    for code, _ in sorted(root["children"].items(), key=lambda kv: -kv[1])[:2]:
        first = browse.under(catalogue, browse.BrowseConfig(prefix=(code,), limit=0))
        child = max(first["children"], key=first["children"].get)
        found = browse.under(catalogue, browse.BrowseConfig(prefix=(code, child), limit=SUBTRIE_ITEMS))
        shown.append({"unit": unit["name"], "parent_size": first["size"], "parent_children": first["children"],
                      **found})
    return shown


# ---- the page: sections of (kind, payload), written as Markdown and as HTML ----

def experiment_table(unit: dict) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a unit's table (what the report shows, also what the test compares with JSON)."""
    header = ["arm", "history", "CTR AUC [95% CI]", "change", "CTR/1D AUC [95% CI]", "change"]
    rows = []
    for setting in (True, False):
        for r in (r for r in unit["rows"] if r["use_history"] == setting):
            changes = ["(baseline)" if r["is_baseline"] else stats.format_interval(r[key], 2, True)
                       for key in ("ctr_auc_change_pct", "ctr_1d_auc_change_pct")]
            rows.append([r["label"], "yes" if setting else "no", stats.format_interval(r["ctr_auc"]), changes[0],
                         stats.format_interval(r["ctr_1d_auc"]), changes[1]])
    if unit.get("oracle"):
        rows.append(["oracle (true CTR)", "", f"{unit['oracle']['ctr_auc']:.4f}", "",
                     f"{unit['oracle']['ctr_1d_auc']:.4f}", ""])
    return header, rows


def slice_table(unit: dict) -> tuple[list[str], list[list[str]]]:
    """Per arm, setting and slice: impressions, CTR AUC, NE and calibration with their intervals."""
    header = ["arm", "history", "slice", "impressions", "CTR AUC", "NE", "calibration"]
    rows = []
    for r in (r for r in unit["rows"] if r.get("slices")):
        for family, cells in r["slices"].items():
            for name, cell in cells.items():
                rows.append([r["label"], "yes" if r["use_history"] else "no", f"{family}: {name}",
                             f"{cell['impressions']:,.0f}"] +
                            [stats.format_interval(cell[key], 3) if key in cell else "n/a"
                             for key in ("ctr_auc", "ne", "calibration")])
    return header, rows


def stability_table(unit: dict) -> tuple[list[str], list[list[str]]]:
    """Per arm and setting: churn on the probe per slice with intervals, and the seed variance of its first two
    seeds."""
    header = ["arm", "history", *(f"churn: {s}" for s in stability.SLICES),
              *(f"seed variance: {s}" for s in stability.SLICES)]
    rows = []
    for r in (r for r in unit["rows"] if "churn_overall" in r):
        variance = r.get("seed_variance") or {}
        rows.append([r["label"], "yes" if r["use_history"] else "no"]
                    + [stats.format_interval(r[f"churn_{s}"], 4) if f"churn_{s}" in r else "n/a"
                       for s in stability.SLICES]
                    + [f"{variance[s]:.4f}" if variance.get(s) is not None else "n/a" for s in stability.SLICES])
    return header, rows


def _sections(units: list[dict], figures: dict, subtries: list[dict]) -> list[tuple[str, object]]:
    s = [("h1", "Semantic IDs in ranking: the paper's findings, with intervals"),
         ("p", "Every number below is computed from the runs listed in results.json; each verdict follows a fixed "
               "rule (pipeline/stages/findings.py): a change is significant when its 95% interval excludes 0, and "
               f"two results are comparable when their difference lies within +-{findings.EQUIVALENCE_PCT:g}%.")]
    s.append(("h2", "Verdicts"))
    s.append(("table", (["finding", "claim"] + [u["name"] for u in units],
                        [[f["id"], f["claim"]] + [u["findings"][i]["verdict"] for u in units]
                         for i, f in enumerate(units[0]["findings"])])))
    if "worlds" in figures:
        balances = "; ".join(f"{u['name']}: b = {u['balance']}" for u in units if u.get("balance") is not None)
        s += [("h2", "Worlds"), ("p", "Balance b of each simulated world: the share of the click logit's weight on "
                                      "the memorisation signal (per-item quality) against the generalisation signals "
                                      f"(topic affinity, watch-candidate similarity). {balances}"),
              ("figure", figures["worlds"])]
    for unit in units:
        name = unit["name"]
        s.append(("h2", f"{name} ({unit['kind']})"))
        days = unit["days"]
        s.append(("p", f"Mean over the evaluation days {days[0]}-{days[-1]}, each evaluated before the model trained "
                       f"on it; vocabularies learned on the days before {unit['eval_from']} only. {unit['seeds']} "
                       f"seeds; intervals: {unit['interval']}. % change against {unit['baseline']} in the same setting."))
        if unit.get("substituted"):
            s.append(("p", "The training window's SIDs could not support some SPM sizes; the nearest vocabulary "
                           "that works ran in their place (per seed): " + "; ".join(
                               f"{a}: {', '.join(b)}" for a, b in unit["substituted"].items()) + "."))
        s.append(("table", experiment_table(unit)))
        s.append(("h3", "Findings"))
        s.append(("table", (["finding", "verdict", "evidence"],
                            [[f["id"], f["verdict"], f["evidence"]] for f in unit["findings"]])))
        for key in (f"fig2_3_{name}", f"fig4_{name}", f"fig5_{name}", f"per_day_{name}"):
            if key in figures:
                s.append(("figure", figures[key]))
        if any(r.get("slices") for r in unit["rows"]):
            s += _table_section(
                "Slices: item age and training-window popularity",
                "CTR AUC, normalized entropy (log loss over the entropy of the slice's click rate; lower is better) "
                "and calibration (mean predicted over observed CTR; 1 is calibrated) per slice, mean over the "
                "evaluation days, with impressions per run. Popularity: thirds of the training window's impressions "
                "(head, torso, tail) and items it never impressed.", slice_table(unit), figures.get(f"calibration_{name}"))
        if any("churn_overall" in r for r in unit["rows"]):
            s += _table_section(
                "Prediction stability (F8)",
                f"A fixed probe, the first {stability.PROBE_ROWS:,} impressions of the last day, scored by the model of "
                "every evaluation day (none has trained on it). Churn: mean |change of predicted CTR| between "
                "consecutive days' models of one run; seed variance: between the first two model seeds on the same "
                "days. Tail: the training window's least impressed third of items; new: items first seen on the "
                "probe's day.", stability_table(unit), figures.get(f"stability_{name}"))
        if unit.get("sid_quality"):
            s.append(("h3", "Table 1: similarity of items sharing a SID prefix"))
            s.append(("table", (["shared prefix length", "item pairs", "mean cosine", "sub-trie size p25-p75"],
                                [[str(r["prefix_length"]), f"{r['pairs']:,}",
                                  "n/a" if r["mean_cosine"] is None else f"{r['mean_cosine']:.2f}",
                                  f"{r['subtrie_size_p25']:g}-{r['subtrie_size_p75']:g}"]
                                 for r in unit["sid_quality"]["prefix_similarity"]])))
        measured = [r for r in unit["rows"] if r.get("aa_difference")]
        if measured:
            s.append(("h3", "A/A prediction difference"))
            s.append(("p", "Two runs of the same arm on the same data with different model seeds: mean |p1 - p2| "
                           "over the evaluation days' impressions. Content-derived IDs should shrink it against "
                           "random hashing, most on cold-start items."))
            s.append(("table", (["arm", "history", "overall", "cold start", "impressions"],
                                [[r["label"], "yes" if r["use_history"] else "no",
                                  f"{r['aa_difference']['overall']:.4f}", f"{r['aa_difference']['cold_start']:.4f}",
                                  f"{r['aa_difference']['impressions']:,}"] for r in measured])))
    if subtries:
        s.append(("h2", "SID sub-tries (the paper's Figures 6-7)"))
        for trie in subtries:
            prefix = ",".join(map(str, trie["prefix"]))
            s.append(("p", f"{trie['unit']}: prefix {prefix} holds {trie['size']:,} items (its parent "
                           f"{trie['prefix'][0]} holds {trie['parent_size']:,} in {len(trie['parent_children'])} "
                           "children)."))
            s.append(("table", (["SID", "item", "title"], [[",".join(map(str, i["sid"])), i["item_id"], i["title"]]
                                                          for i in trie["items"]])))
    return s


def _table_section(title: str, text: str, table, figure=None) -> list[tuple[str, object]]:
    """A sub-section: its heading, what it shows, its table and (if drawn) its figure."""
    return [("h3", title), ("p", text), ("table", table)] + ([("figure", figure)] if figure else [])


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def to_markdown(sections: list) -> str:
    lines = []
    for kind, payload in sections:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + payload, ""]
        elif kind == "p":
            lines += [payload, ""]
        elif kind == "table":
            header, rows = payload
            lines += [_md_row(header), _md_row(["---"] * len(header))] + [_md_row(r) for r in rows] + [""]
        elif kind == "figure":
            caption, path = payload
            lines += [f"![{caption}]({files.basename(path)})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def to_html(sections: list, output: str) -> str:
    """The page with every figure embedded (base64 PNG), so the one file is the whole report."""
    body = []
    for kind, payload in sections:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(payload)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(payload)}</p>")
        elif kind == "table":
            header, rows = payload
            body.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>"
                        "<tbody>" + "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                                            for row in rows) + "</tbody></table>")
        elif kind == "figure":
            caption, path = payload
            data = base64.b64encode(files.read_bytes(path)).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
             "th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:left}th{background:#f3f3f3}"
             "img{max-width:100%}figcaption{font-style:italic;color:#555}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Semantic IDs in ranking: report"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
