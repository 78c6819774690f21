"""The dedup part of ``report.json`` and a human-readable report: Markdown with two SVG charts
(:mod:`pileprep.formats.svg`: the same result always gives the same bytes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pileprep.core import atomic
from pileprep.core.files import DEDUP_MARKDOWN
from pileprep.formats import svg

MARKDOWN = DEDUP_MARKDOWN
RATES_CHART = "dedup_removal_by_subset.svg"
SIMILARITY_CHART = "dedup_similarity.svg"


def summary(dup, kept_subsets: dict[str, dict[str, int]]) -> dict:
    """Counts for ``report.json``: settings, pair counts, and removal per ``pile_set_name``."""
    by_subset = {}
    for name in sorted(set(kept_subsets) | set(dup.removed_by_subset)):
        docs, tokens, nbytes = dup.removed_by_subset.get(name, [0, 0, 0])
        kept = kept_subsets.get(name, {}).get("documents", 0)
        by_subset[name] = {"documents": docs, "tokens": tokens, "bytes": nbytes,
                           "rate": round(docs / (docs + kept), 6) if docs + kept else 0.0}
    sims = dup.removed["sim"]
    return {**dup.stats, "removed": int(len(dup.removed)),
            "removed_tokens": sum(v["tokens"] for v in by_subset.values()),
            "removed_direct": int(dup.removed["direct"].sum()),
            "similarity_min": float(np.nanmin(sims)) if np.isfinite(sims).any() else None,
            "by_subset": by_subset}


def write(out: Path, dup, summ: dict) -> dict[str, str]:
    """Write the Markdown report and its charts into ``out``; return ``{name: sha256}``."""
    subsets = summ["by_subset"]
    counted = summ.get("tokens_counted", True)
    names = sorted(subsets, key=lambda n: -subsets[n]["rate"])
    rates = svg.bars([n or "(none)" for n in names], [100 * subsets[n]["rate"] for n in names],
                     f"Near-duplicates removed per subset (Jaccard >= {summ['threshold']:g})",
                     "documents removed (%)")
    sims = dup.removed["sim"][np.isfinite(dup.removed["sim"])]
    similarity = svg.histogram(
        sims, np.linspace(min(summ["threshold"], 0.5), 1.0, 41),
        "Similarity of removed documents" + ("" if summ["verify"] else " (not verified)"),
        "estimated Jaccard similarity of a removed document (best edge)", "documents")
    hashes = {RATES_CHART: _write(out / RATES_CHART, rates),
              SIMILARITY_CHART: _write(out / SIMILARITY_CHART, similarity)}

    lines = [
        "# Near-duplicate removal", "",
        f"MinHash-LSH, Jaccard threshold {summ['threshold']:g}, {summ['num_perm']} permutations "
        f"in {summ['bands']} bands of {summ['rows']} rows; candidates "
        + ("verified by estimated Jaccard." if summ["verify"] else "not verified."), "",
        f"- candidate pairs: {summ['candidate_pairs']:,}; joined: {summ['verified_pairs']:,}",
        f"- clusters: {summ['clusters']:,} holding {summ['documents_in_clusters']:,} documents",
        f"- removed: {summ['removed']:,} documents"
        + (f", {summ['removed_tokens']:,} tokens" if counted else " (tokens not counted: dedup only)")
        + f" ({summ['removed_direct']:,} joined directly to the kept document)", "",
        "| subset | removed documents | " + ("removed tokens | " if counted else "") + "rate |",
        "|---|---:|" + ("---:|" if counted else "") + "---:|",
    ]
    lines += [f"| {n or '(none)'} | {subsets[n]['documents']:,} | "
              + (f"{subsets[n]['tokens']:,} | " if counted else "")
              + f"{100 * subsets[n]['rate']:.2f} % |" for n in names]
    lines += ["", f"![removal rate per subset]({RATES_CHART})", "",
              f"![similarity histogram]({SIMILARITY_CHART})", "",
              "The full list, with the document each one duplicates, is `duplicates.parquet`.", ""]
    hashes[MARKDOWN] = _write(out / MARKDOWN, "\n".join(lines))
    return hashes


def _write(path: Path, text: str) -> str:
    """Write ``text`` atomically; its sha256."""
    data = text.encode()
    atomic.write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()
