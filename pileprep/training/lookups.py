"""Reverse lookups over a training schedule: where a document, or a text, was trained on.

``occurrences`` answers "at which (step, row, token range) did the trainer see document d?":
d's positions in ``doc_idx`` give token ranges of the shuffled stream, those give the samples
that overlap them, ``shuffle_idx`` gives where each sample was consumed, and the samples'
pieces (:mod:`.pieces`, the same split as every other command) give the token ranges.
"""

from __future__ import annotations

import unicodedata

import numpy as np

from pileprep.core.errors import ConfigError
from pileprep.formats import provenance
from pileprep.training.order import TrainingOrder

_SCAN = 1 << 26  # tokens scanned at once by the text search


def find_doc(order: TrainingOrder, source: str, line: int) -> int:
    return provenance.find(order.provenance(), source, line)


def _stream_samples(order: TrainingOrder, doc: int) -> np.ndarray:
    """Samples k (in stream order) whose tokens overlap a copy of document ``doc``."""
    s, L = order.schedule, order.cfg.seq_length
    sizes = order.data.sizes
    n_samples = len(s.sample_idx) - 1
    found, a, prev = [], 0, 0  # a: stream position of doc_idx[prev]; one pass over doc_idx
    for q in np.flatnonzero(np.asarray(s.doc_idx) == doc):
        a += int(sizes[s.doc_idx[prev:q]].sum(dtype=np.int64))
        prev = q
        b = a + int(sizes[doc])
        # Sample k covers [k*L, k*L+L]: it overlaps [a, b) when k*L <= b-1 and k*L+L >= a.
        found.append(np.arange(max(0, -((L - a) // L)), min(n_samples - 1, (b - 1) // L) + 1))
    return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)


def occurrences(order: TrainingOrder, doc: int) -> list[dict]:
    """Every trained (step, row) whose tokens include document ``doc``, in step order: the
    source record of each piece plus ``step`` and ``row``."""
    ks = _stream_samples(order, doc)
    if not len(ks):
        return []
    shuffle = np.asarray(order.schedule.shuffle_idx)
    trained = np.flatnonzero(np.isin(shuffle[:order.num_trained_samples], ks.astype(shuffle.dtype)))
    p = order.pieces(trained)
    p = p.select(p.doc == doc)
    B = order.cfg.batch_size
    return [{"step": int(n) // B, "row": int(n) % B, **rec}
            for n, rec in zip(p.sample.tolist(), order.describe(p))]


def docs_by_text(order: TrainingOrder, tokenizer, text: str, limit: int = 20) -> list[int]:
    """Documents whose text contains ``text``: token search for candidates, decoded to confirm.

    A snippet's first and last tokens depend on its neighbours in the document, so only its
    interior tokens are searched; every candidate is then decoded and checked as text.
    """
    want = unicodedata.normalize("NFC", text)
    ids = tokenizer.encode(want).ids
    core = ids[1:-1] if len(ids) >= 3 else ids
    if not core:
        raise ConfigError("--text is empty")
    tokens, starts = order.data.tokens, order.data.pointers // order.data.dtype.itemsize
    anchor = core[0]
    found: list[int] = []
    for lo in range(0, len(tokens), _SCAN):
        chunk = np.asarray(tokens[lo:lo + _SCAN + len(core)])
        for p in np.flatnonzero(chunk[:_SCAN] == anchor) + lo:
            if tokens[p:p + len(core)].tolist() != core:
                continue
            doc = int(np.searchsorted(starts, p, side="right")) - 1
            if doc in found:
                continue
            if want in tokenizer.decode(order.data[doc].tolist(), skip_special_tokens=False):
                found.append(doc)
                if len(found) >= limit:
                    return found
    return found
