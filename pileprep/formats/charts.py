"""PNG charts: matplotlib on the Agg backend, saved without a time stamp so that the same
figures give the same bytes. Used by ``pileprep plot``, ``count`` and ``contamination`` (the
dedup report's charts are SVG text: :mod:`pileprep.formats.svg`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pileprep.core import atomic


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> str:
    """Write the figure atomically; return the file's sha256."""
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    pyplot().close(fig)
    return atomic.sha256_file(path)


def subset_mix(table: np.ndarray, names: list[str], edges: list[int], path: Path, title: str,
               top: int = 12) -> str:
    """Stacked bars: share of tokens per subset (columns of ``table``) in each step range
    ``edges[i] .. edges[i+1]-1`` (rows). Subsets beyond the ``top`` largest are summed as
    "other". Returns the PNG's sha256."""
    plt = pyplot()
    order = np.argsort(-table.sum(axis=0), kind="stable")
    keep, rest = order[:top], order[top:]
    shares = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
    series = [(names[i] or "(none)", shares[:, i]) for i in keep]
    if len(rest):
        series.append(("other", shares[:, rest].sum(axis=1)))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = np.arange(len(table))
    bottom = np.zeros(len(table))
    cmap = plt.get_cmap("tab20")
    for j, (name, share) in enumerate(series):
        ax.bar(x, 100 * share, bottom=100 * bottom, width=0.9, label=name, color=cmap(j % 20))
        bottom += share
    labels = [f"{a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:])]
    step = max(1, len(labels) // 12)
    ax.set_xticks(x[::step], labels[::step], rotation=30, ha="right")
    ax.set_xlabel("training steps")
    ax.set_ylabel("tokens (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def term_frequency(edges: list[int], curves: np.ndarray, labels: list[str], path: Path, title: str,
                   ylabel: str = "training samples seen (cumulative)") -> str:
    """One line per query: its cumulative count at the end of each step range. Returns the
    PNG's sha256."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = np.asarray(edges[1:]) - 1
    for label, y in zip(labels, curves):
        ax.plot(x, y, marker="o", markersize=3, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return save(fig, path)
