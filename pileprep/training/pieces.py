"""Training samples as document pieces: the one place a sample is split into documents.

Training sample n covers stream positions ``[k*L, k*L+L]`` (k = ``shuffle_idx[n]``) of the
shuffled document stream, i.e. documents ``doc_idx[i0..i1]`` from ``sample_idx[k]`` and
``sample_idx[k+1]``, the first from offset ``o0`` and the last up to ``o1`` inclusive. Expanding
those index ranges with numpy gives every (sample, document, tokens) piece of many samples at
once, without a Python loop per sample: what batches, sources, step-range summaries, exports
and reverse lookups are all built from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pileprep.training.schedule import Schedule

SAMPLES_AT_ONCE = 1 << 16  # bounds the temporary arrays of callers that loop over many samples


@dataclass
class Pieces:
    """Parallel arrays, one entry per (training sample, document) piece, in training order."""

    sample: np.ndarray  # training sample number n (step = n // batch_size, row = n % batch_size)
    doc: np.ndarray  # document index in the dataset
    offset: np.ndarray  # first token of the piece within its document
    tokens: np.ndarray  # tokens of the document inside the sample
    row_start: np.ndarray  # first token of the piece within the sample's L+1 tokens

    def __len__(self) -> int:
        return len(self.doc)

    def select(self, mask) -> "Pieces":
        return Pieces(*(getattr(self, f)[mask] for f in FIELDS))


FIELDS = ("sample", "doc", "offset", "tokens", "row_start")


@dataclass(frozen=True)
class Preshuffled:
    """The order of a preshuffled dataset (Pythia's ``*-pythia-preshuffled``): its items are
    the training samples, L+1 tokens each, in training order, so training sample n is item n,
    whole: one piece."""

    items: int
    epochs: int = 1


def expand(schedule: Schedule | Preshuffled, sizes: np.ndarray, samples) -> Pieces:
    """Every piece of the training samples ``samples`` (numbers n, any order), sample by sample."""
    n = np.asarray(samples, dtype=np.int64)
    if isinstance(schedule, Preshuffled):
        zeros = np.zeros(len(n), np.int64)
        return Pieces(n, n, zeros, np.asarray(sizes[n] if len(n) else n, np.int64), zeros.copy())
    k = np.asarray(schedule.shuffle_idx[n] if len(n) else n[:0], dtype=np.int64)
    sample_idx = schedule.sample_idx
    # Both ends in one request: on disk that is one pass over sample_idx, not two.
    start, end = np.asarray(sample_idx[np.concatenate([k, k + 1])], dtype=np.int64).reshape(2, -1, 2)
    count = end[:, 0] - start[:, 0] + 1  # doc_idx entries each sample touches
    owner = np.repeat(np.arange(len(n)), count)
    first_of = np.cumsum(count) - count
    pos = start[owner, 0] + (np.arange(len(owner)) - first_of[owner])
    doc = np.asarray(schedule.doc_idx[pos] if len(pos) else pos, dtype=np.int64)
    tokens = np.asarray(sizes[doc], dtype=np.int64)
    offset = np.zeros(len(doc), np.int64)
    offset[first_of] = start[:, 1]
    last_of = first_of + count - 1
    # The last piece ends at offset o1 (inclusive); the first starts at o0. When both are the
    # same document, this gives o1 - o0 + 1, as required.
    tokens[last_of] = end[:, 1] + 1
    tokens[first_of] -= start[:, 1]
    ends = np.cumsum(tokens)
    row_start = ends - tokens - (ends - tokens)[first_of][owner]
    return Pieces(n[owner], doc, offset, tokens, row_start)


def of_range(schedule: Schedule, sizes: np.ndarray, lo: int, hi: int) -> Pieces:
    """Every piece of training samples ``lo .. hi-1``, in chunks that bound the temporaries."""
    chunks = [expand(schedule, sizes, np.arange(a, min(a + SAMPLES_AT_ONCE, hi)))
              for a in range(lo, hi, SAMPLES_AT_ONCE)]
    if not chunks:
        return expand(schedule, sizes, np.zeros(0, np.int64))
    return Pieces(*(np.concatenate([getattr(c, f) for c in chunks]) for f in FIELDS))
