"""What a range of training steps contains, computed for all its samples at once.

Training sample n covers stream positions ``[k*L, k*L+L]`` (k = ``shuffle_idx[n]``) of the
shuffled document stream, i.e. documents ``doc_idx[i0..i1]`` from ``sample_idx[k]`` and
``sample_idx[k+1]``, the first from offset ``o0`` and the last up to ``o1`` inclusive. Expanding
those index ranges with numpy gives every (sample, document, tokens) piece of a step range
without a Python loop per sample, which is what the subset-mix plot and ``pileprep seen`` need
over thousands of steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .training import TrainingOrder

_SAMPLES = 1 << 16  # samples expanded at once: bounds the temporary arrays


@dataclass
class Pieces:
    """Parallel arrays, one entry per (training sample, document) piece."""

    sample: np.ndarray  # training sample number n (step = n // batch_size)
    doc: np.ndarray  # document index in the dataset
    tokens: np.ndarray  # tokens of the document inside the sample


def pieces(order: TrainingOrder, first_step: int, end_step: int) -> Pieces:
    """Every piece of the samples of steps ``first_step .. end_step-1``, in training order."""
    order.rows(first_step)
    order.rows(end_step - 1)
    B = order.cfg.batch_size
    out = [_pieces(order, lo, min(lo + _SAMPLES, end_step * B))
           for lo in range(first_step * B, end_step * B, _SAMPLES)]
    return Pieces(*(np.concatenate([getattr(p, f) for p in out])
                    for f in ("sample", "doc", "tokens")))


def _pieces(order: TrainingOrder, lo: int, hi: int) -> Pieces:
    s, sizes = order.schedule, order.data.sizes
    n = np.arange(lo, hi, dtype=np.int64)
    k = np.asarray(s.shuffle_idx[lo:hi], dtype=np.int64)
    start = np.asarray(s.sample_idx)[k].astype(np.int64)
    end = np.asarray(s.sample_idx)[k + 1].astype(np.int64)
    count = end[:, 0] - start[:, 0] + 1  # doc_idx entries each sample touches
    owner = np.repeat(np.arange(len(n)), count)
    first_of = np.cumsum(count) - count
    pos = start[owner, 0] + (np.arange(len(owner)) - first_of[owner])
    doc = np.asarray(s.doc_idx)[pos].astype(np.int64)
    tokens = sizes[doc].astype(np.int64)
    last_of = first_of + count - 1
    # The last piece ends at offset o1 (inclusive); then the first starts at o0. When both are
    # the same document, this gives o1 - o0 + 1, as required.
    tokens[last_of] = end[:, 1] + 1
    tokens[first_of] -= start[:, 1]
    return Pieces(n[owner], doc, tokens)


def subset_codes(order: TrainingOrder) -> tuple[np.ndarray, list[str]]:
    """Per document, the index of its ``pile_set_name`` in the returned list of names."""
    _, _, subset = order.provenance()
    return subset.indices.to_numpy(zero_copy_only=False), subset.dictionary.to_pylist()


def subset_tokens(order: TrainingOrder, p: Pieces, bins: np.ndarray | None = None
                  ) -> tuple[np.ndarray, list[str]]:
    """Tokens per (bin, subset): ``bins[i]`` is the bin of piece i (default: one bin)."""
    codes, names = subset_codes(order)
    bins = np.zeros(len(p.doc), np.int64) if bins is None else bins
    n_bins = int(bins.max()) + 1 if len(bins) else 1
    flat = bins * len(names) + codes[p.doc]
    table = np.bincount(flat, weights=p.tokens, minlength=n_bins * len(names))
    return table.reshape(n_bins, len(names)).astype(np.int64), names


def documents(p: Pieces) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct documents of the pieces: ``(doc, tokens seen, first sample seen)``, by doc."""
    order = np.lexsort((p.sample, p.doc))
    doc, sample, tok = p.doc[order], p.sample[order], p.tokens[order]
    head = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])
    return doc[head], np.add.reduceat(tok, head) if len(head) else tok[:0], sample[head]
