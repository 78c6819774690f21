"""The charts a query draws: the subset mix over steps (``plot``) and term frequency over
steps (``count --plot``), as byte-stable PNGs (:mod:`pileprep.formats.charts`)."""

from __future__ import annotations

from pathlib import Path

from pileprep.formats import charts
from pileprep.training.ngram import Counts
from pileprep.training.order import TrainingOrder
from pileprep.training.steps import subset_mix as mix_of

TERMS_DRAWN = 10  # curves in one term-frequency chart


def _settings(order: TrainingOrder) -> str:
    c = order.cfg
    return f"seq {c.seq_length}, batch {c.batch_size}, seed {c.seed}"


def subset_mix(order: TrainingOrder, first: int, end: int, bins: int | list[int], path: str | Path
               ) -> tuple[int, int]:
    """Tokens per subset in ``bins`` step ranges of ``first .. end-1`` drawn to ``path``;
    returns (ranges, subsets)."""
    table, names, edges = mix_of(order, first, end, bins)
    charts.subset_mix(table, names, edges, Path(path), f"Subset mix of training tokens, steps "
                      f"{first}-{end - 1} ({_settings(order)})")
    return len(edges) - 1, len(names)


def term_frequency(counts: Counts, labels: list[str], order: TrainingOrder, path: str | Path
                   ) -> int:
    """Cumulative training samples holding each term (the first ``TERMS_DRAWN``) over the
    counted steps, drawn to ``path``; returns the curves drawn."""
    first, end = counts.edges[0], counts.edges[-1]
    charts.term_frequency(counts.edges, counts.cumulative("samples")[:TERMS_DRAWN],
                          labels[:TERMS_DRAWN], Path(path),
                          f"Training samples containing each term, steps {first}-{end - 1} "
                          f"({_settings(order)})")
    return min(len(labels), TERMS_DRAWN)
