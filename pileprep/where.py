"""Reverse lookups over a training schedule: where a document was trained on, and exports.

``occurrences`` answers "at which (step, row, token range) did the trainer see document d?" by
finding d's positions in ``doc_idx``, turning each into a token range of the shuffled stream,
listing the samples that overlap it, and finding where those samples sit in ``shuffle_idx``.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np

from . import atomic, indexed, provenance
from .config import ConfigError
from .training import TrainingOrder

_SCAN = 1 << 26  # tokens scanned at once by the text search


def find_doc(order: TrainingOrder, source: str, line: int) -> int:
    return provenance.find(order.provenance(), source, line)


def occurrences(order: TrainingOrder, doc: int) -> list[dict]:
    """Every trained (step, row) whose tokens include document ``doc``, in step order."""
    s, cfg = order.schedule, order.cfg
    L, B = cfg.seq_length, cfg.batch_size
    sizes = order.data.sizes
    n_samples = len(s.sample_idx) - 1
    spans: dict[int, list[tuple[int, int]]] = {}  # sample -> token ranges [a, b) of the doc
    a, prev = 0, 0  # stream position of doc_idx[prev]; advanced once over doc_idx in total
    for q in np.flatnonzero(np.asarray(s.doc_idx) == doc):
        a += int(sizes[s.doc_idx[prev:q]].sum(dtype=np.int64))
        prev = q
        b = a + int(sizes[doc])
        for k in range(max(0, -((L - a) // L)), min(n_samples - 1, (b - 1) // L) + 1):
            spans.setdefault(k, []).append((a, b))
    if not spans:
        return []
    shuffle = np.asarray(s.shuffle_idx)
    positions = np.flatnonzero(np.isin(shuffle, np.fromiter(spans, dtype=shuffle.dtype)))
    hits = []
    for i in positions[positions < cfg.train_iters * B]:
        k = int(shuffle[i])
        for a, b in spans[k]:
            lo, hi = max(a, k * L), min(b, k * L + L + 1)
            hits.append({"step": int(i) // B, "row": int(i) % B,
                         "row_tokens": [lo - k * L, hi - k * L], "doc_tokens": [lo - a, hi - a]})
    return hits


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


def write_sequences(order: TrainingOrder, first_step: int, end_step: int, prefix: str | Path) -> int:
    """Write training samples of steps ``first_step..end_step-1`` as an MMIDIDX dataset."""
    for step in (first_step, end_step - 1):
        order.rows(step)  # validates the step range
    B, width = order.cfg.batch_size, order.cfg.seq_length + 1
    n = (end_step - first_step) * B
    bin_path, idx_path = indexed.data_path(prefix), indexed.index_path(prefix)
    with atomic.atomic_path(bin_path) as tmp, open(tmp, "wb") as f:
        for i in range(first_step * B, end_step * B):
            order.sample(i).tofile(f)
    with atomic.atomic_path(idx_path) as tmp, open(tmp, "wb") as f:
        indexed.write_index(f, order.data.dtype, n,
                            lambda: (np.full(min(1 << 20, n - s), width, np.int32)
                                     for s in range(0, n, 1 << 20)))
    return n
