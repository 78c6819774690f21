"""What a range of training steps contains, computed for all its samples at once.

Built on :mod:`.pieces`: every (sample, document, tokens) piece of a step range, without a
Python loop per sample, which is what the subset-mix plot, ``pileprep seen`` and the batch
summary need over thousands of steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pileprep.training import pieces as pieces_of
from pileprep.training.order import TrainingOrder
from pileprep.training.pieces import Pieces


def pieces(order: TrainingOrder, first_step: int, end_step: int) -> Pieces:
    """Every piece of the samples of steps ``first_step .. end_step-1``, in training order."""
    order.check_steps(first_step, end_step)
    B = order.cfg.batch_size
    return pieces_of.of_range(order.schedule, order.sizes, first_step * B, end_step * B)


def subset_codes(order: TrainingOrder, docs: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """For each of ``docs``, the index of its ``pile_set_name`` in the returned sorted names;
    only the provenance rows of these documents are read."""
    unique, back = np.unique(docs, return_inverse=True)
    _, _, subsets = order.provenance().get(unique)
    names, codes = np.unique(np.asarray(subsets, dtype=object).astype(str), return_inverse=True)
    return codes[back].reshape(-1), names.tolist()


def subset_tokens(order: TrainingOrder, p: Pieces, bins: np.ndarray | None = None
                  ) -> tuple[np.ndarray, list[str]]:
    """Tokens per (bin, subset): ``bins[i]`` is the bin of piece i (default: one bin)."""
    codes, names = subset_codes(order, p.doc)
    names = names or [""]
    bins = np.zeros(len(p.doc), np.int64) if bins is None else bins
    n_bins = int(bins.max()) + 1 if len(bins) else 1
    flat = bins * len(names) + codes
    table = np.bincount(flat, weights=p.tokens, minlength=n_bins * len(names))
    return table.reshape(n_bins, len(names)).astype(np.int64), names


def documents(p: Pieces) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct documents of the pieces: ``(doc, tokens seen, first sample seen)``, by doc."""
    order = np.lexsort((p.sample, p.doc))
    doc, sample, tok = p.doc[order], p.sample[order], p.tokens[order]
    head = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])
    return doc[head], np.add.reduceat(tok, head) if len(head) else tok[:0], sample[head]


@dataclass
class Seen:
    """What steps ``first .. end-1`` trained on."""

    first: int
    end: int
    sequences: int
    subsets: list[tuple[str, int]]  # (pile_set_name, tokens), most tokens first, zero left out
    docs: np.ndarray  # distinct documents, by index
    tokens_seen: np.ndarray  # tokens of each seen in the range
    first_step: np.ndarray  # the first step of the range each was seen in

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self.subsets)

    def top(self, k: int) -> np.ndarray:
        """Positions (in ``docs``) of the k documents with the most tokens seen."""
        return np.argsort(-self.tokens_seen, kind="stable")[:k]


def seen(order: TrainingOrder, first: int, end: int) -> Seen:
    p = pieces(order, first, end)
    table, names = subset_tokens(order, p)
    docs, tokens_seen, first_sample = documents(p)
    ranked = [(names[j], int(table[0, j])) for j in np.argsort(-table[0], kind="stable") if table[0, j]]
    return Seen(first, end, (end - first) * order.cfg.batch_size, ranked, docs, tokens_seen,
                first_sample // order.cfg.batch_size)


def subset_mix(order: TrainingOrder, first: int, end: int, bins: int
               ) -> tuple[np.ndarray, list[str], list[int]]:
    """Tokens per (step range, subset) over ``bins`` equal step ranges of ``first .. end-1``:
    the table, the subset names and the range edges."""
    edges = sorted(set(np.linspace(first, end, min(bins, end - first) + 1).round().astype(int).tolist()))
    p = pieces(order, first, end)
    step_of = p.sample // order.cfg.batch_size
    bin_of = np.searchsorted(np.asarray(edges[1:-1]), step_of, side="right")
    table, names = subset_tokens(order, p, bin_of)
    return table, names, edges


@dataclass
class BatchSummary:
    step: int
    rows: list[int]
    documents: int
    subsets: list[tuple[str, int]]  # tokens per subset, most first
    sources: list[list[dict]]  # per row, its source records


def batch_summary(order: TrainingOrder, step: int, rows: list[int] | None = None) -> BatchSummary:
    rows = order.rows(step, rows)
    sources = order.sources(step, rows)
    docs = {rec["doc"] for row in sources for rec in row}
    subsets: dict[str, int] = {}
    for row in sources:
        for rec in row:
            subsets[rec["pile_set_name"]] = subsets.get(rec["pile_set_name"], 0) + rec["row_end"] - rec["row_start"]
    return BatchSummary(step, rows, len(docs), sorted(subsets.items(), key=lambda kv: -kv[1]), sources)
