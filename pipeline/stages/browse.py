"""`sidrec browse`: the items under a SID prefix and the size of each child (the paper's Figures 6-7).

A prefix of n codes is a node of the SID trie; its children are the codes at level n + 1 that
follow it. Titles come from the corpus when it has them (MovieLens does; the simulator does not).
"""

import dataclasses

import numpy as np

from pipeline.core.layout import RunLayout, SidTableLayout
from pipeline.core.records import SidTable
from pipeline.data import corpus_io, sid_table_io
from pipeline.stages.configs import BrowseConfig  # noqa: F401  (re-exported)


def subtrie(item_ids: np.ndarray, sids: np.ndarray, prefix: tuple[int, ...]) -> dict:
    """The items whose SID starts with `prefix`, sorted by SID, and {next code: items} of its children."""
    if len(prefix) > sids.shape[1]:
        raise ValueError(f"prefix {list(prefix)} is longer than the SIDs (L={sids.shape[1]})")
    under = np.all(sids[:, :len(prefix)] == np.asarray(prefix, np.int64), axis=1) if prefix else \
        np.ones(len(sids), bool)
    rows = np.flatnonzero(under)
    rows = rows[np.lexsort(sids[rows].T[::-1])] if rows.size else rows
    children = {}
    if len(prefix) < sids.shape[1] and rows.size:
        codes, counts = np.unique(sids[rows, len(prefix)], return_counts=True)
        children = {int(c): int(n) for c, n in zip(codes, counts)}
    return {"rows": rows, "children": children}


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """A run's SID table with the titles of its items (empty without titles), read once for many prefixes."""

    table: SidTable
    titles: dict


def load(layout: RunLayout) -> Catalogue:
    """Reads the run's SID table and the titles from its corpus."""
    table = sid_table_io.read_sid_table(SidTableLayout(layout.sids).table)
    corpus = corpus_io.read_corpus(layout.data.corpus)
    return Catalogue(table, dict(zip(corpus.item_ids, corpus.titles)) if corpus.titles is not None else {})


def under(catalogue: Catalogue, config: BrowseConfig) -> dict:
    """The sub-trie under the prefix: its first items (with titles), its size and the size of each child."""
    table = catalogue.table
    found = subtrie(table.item_ids, table.sids, config.prefix)
    items = [{"item_id": str(table.item_ids[r]), "title": catalogue.titles.get(table.item_ids[r], ""),
              "sid": table.sids[r].tolist()} for r in found["rows"][:config.limit]]
    return {"prefix": list(config.prefix), "items": items, "size": int(len(found["rows"])),
            "children": found["children"], "rqvae_version": table.rqvae_version}


def run(layout: RunLayout, config: BrowseConfig) -> dict:
    """Reads the run's SID table (and titles from its corpus); returns the sub-trie under the prefix."""
    return under(load(layout), config)


def describe(result: dict) -> str:
    prefix = ",".join(map(str, result["prefix"])) or "(root)"
    lines = [f"prefix {prefix}: {result['size']:,} items (RQ-VAE {result['rqvae_version']})"]
    if result["children"]:
        lines.append("children (next code: items): " + ", ".join(f"{c}: {n}" for c, n in result["children"].items()))
    for item in result["items"]:
        lines.append(f"  {','.join(map(str, item['sid'])):<20} {item['item_id']:<14} {item['title']}")
    if result["size"] > len(result["items"]):
        lines.append(f"  ... {result['size'] - len(result['items']):,} more (--limit)")
    return "\n".join(lines)
