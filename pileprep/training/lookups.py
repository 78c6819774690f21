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
from pileprep.formats import indexed
from pileprep.training.order import TrainingOrder
from pileprep.training.pieces import Preshuffled

_SCAN = 1 << 26  # tokens scanned at once by the text search
_CHUNK = 1 << 22  # schedule entries scanned at once (16-32 MiB)


def parse_doc_ref(text: str) -> tuple[str, int]:
    """``SOURCE:LINE`` (a shard's file name and a 0-based line in it) as ``(source, line)``."""
    source, _, line = text.rpartition(":")
    if not source or not line.isdigit():
        raise ConfigError(f"a document is SOURCE:LINE, e.g. 00.jsonl.zst:1234, not {text!r}")
    return source, int(line)


def find_doc(order: TrainingOrder, source: str, line: int) -> int:
    return order.provenance().find(source, line)


def positions(array, value, chunk: int = _CHUNK) -> np.ndarray:
    """Indices where a (memory-mapped) 1-d array equals ``value``, a chunk at a time."""
    hits = [np.flatnonzero(part == value) + lo for lo, part in indexed.chunks(array, chunk)]
    return np.concatenate(hits) if hits else np.zeros(0, np.int64)


def where_in(array, values: np.ndarray, stop: int | None = None, chunk: int = _CHUNK) -> np.ndarray:
    """Indices (below ``stop``) of a (memory-mapped) 1-d array whose entry is one of
    ``values``, chunked."""
    values = np.asarray(values, dtype=array.dtype)
    hits = [np.flatnonzero(np.isin(part, values)) + lo
            for lo, part in indexed.chunks(array, chunk, stop)]
    return np.concatenate(hits) if hits else np.zeros(0, np.int64)


def last_at_most(sample_idx, q: int) -> int:
    """The last k with ``sample_idx[k, 0] <= q``, by bisection over the memory map (numpy's
    searchsorted would first copy the whole strided column)."""
    lo, hi = 0, len(sample_idx)  # invariant: sample_idx[lo, 0] <= q < sample_idx[hi, 0]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if int(sample_idx[mid, 0]) <= q:
            lo = mid
        else:
            hi = mid
    return lo


def _stream_start(order: TrainingOrder, q: int) -> int:
    """The stream position of ``doc_idx[q]``'s first token, from the sample that holds it:
    sample_idx's first column is monotone, so a binary search finds the sample k starting at
    or before entry q, and only the few documents between its start and q are summed."""
    s, L, sizes = order.schedule, order.cfg.seq_length, order.sizes
    k = last_at_most(s.sample_idx, q)
    i, o = int(s.sample_idx[k, 0]), int(s.sample_idx[k, 1])
    between = np.asarray(s.doc_idx[i:q])
    return k * L - o + int(np.asarray(sizes[between], np.int64).sum())


def _stream_samples(order: TrainingOrder, doc: int) -> np.ndarray:
    """Samples k (in stream order) whose tokens overlap a copy of document ``doc``."""
    L, n_samples = order.cfg.seq_length, len(order.schedule.sample_idx) - 1
    size = int(order.data.sizes[doc])
    found = []
    for q in positions(order.schedule.doc_idx, doc).tolist():
        a = _stream_start(order, q)
        b = a + size
        # Sample k covers [k*L, k*L+L]: it overlaps [a, b) when k*L <= b-1 and k*L+L >= a.
        found.append(np.arange(max(0, -((L - a) // L)), min(n_samples - 1, (b - 1) // L) + 1))
    return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)


def occurrences(order: TrainingOrder, doc: int) -> list[dict]:
    """Every trained (step, row) whose tokens include document ``doc``, in step order: the
    source record of each piece plus ``step`` and ``row``. Reads the schedule a chunk at a time:
    memory does not grow with the dataset."""
    B = order.cfg.batch_size
    if isinstance(order.schedule, Preshuffled):  # item ``doc`` is training sample ``doc``
        if doc >= order.num_trained_samples:
            return []
        p = order.pieces([doc])
        return [{"step": doc // B, "row": doc % B, **order.describe(p)[0]}]
    ks = _stream_samples(order, doc)
    if not len(ks):
        return []
    shuffle = order.schedule.shuffle_idx
    trained = where_in(shuffle, ks, stop=order.num_trained_samples)
    p = order.pieces(trained)
    p = p.select(p.doc == doc)
    B = order.cfg.batch_size
    return [{"step": int(n) // B, "row": int(n) % B, **rec}
            for n, rec in zip(p.sample.tolist(), order.describe(p))]


def docs_by_text(order: TrainingOrder, tokenizer, text: str, limit: int = 20, index=None) -> list[int]:
    """Documents whose text contains ``text``, in document order: token search for candidates,
    decoded to confirm.

    A snippet's first and last tokens depend on its neighbours in the document, so only its
    interior tokens are searched, inside documents; every candidate is then decoded and checked
    as text. With ``index`` (a :class:`~pileprep.formats.suffix.SuffixIndex`) the candidates
    come from the suffix array, else from a scan of the whole ``.bin``: the same documents.
    """
    want = unicodedata.normalize("NFC", text)
    ids = tokenizer.encode(want).ids
    core = ids[1:-1] if len(ids) >= 3 else ids
    if not core:
        raise ConfigError("--text is empty")
    candidates = _indexed_candidates(order, index, core) if index is not None \
        else _scanned_candidates(order, core)
    found: list[int] = []
    for doc in candidates:
        if want in tokenizer.decode(order.data[doc].tolist(), skip_special_tokens=False):
            found.append(doc)
            if len(found) >= limit:
                break
    return found


def doc_and_offset(data: indexed.IndexedDataset, pos) -> tuple[np.ndarray, np.ndarray]:
    """(document, offset in it) of token positions ``pos`` of the stream: a binary search of
    the ``.idx`` pointers, which touches a few pages per position (nothing is read whole)."""
    item, pos = data.dtype.itemsize, np.asarray(pos, np.int64)
    doc = np.searchsorted(data.pointers, pos * item, side="right") - 1
    return doc, pos - np.asarray(data.pointers[doc], np.int64) // item


def _inside(order: TrainingOrder, pos: np.ndarray, length: int) -> np.ndarray:
    """The documents of the positions from which ``length`` tokens stay inside the document."""
    doc, offset = doc_and_offset(order.data, pos)
    return doc[offset + length <= np.asarray(order.data.sizes[doc], np.int64)]


def _indexed_candidates(order: TrainingOrder, index, core: list[int]):
    """Documents with ``core`` inside them, ascending, from the suffix array."""
    docs = [np.unique(_inside(order, pos, len(core))) for pos in index.positions(core)]
    yield from np.unique(np.concatenate(docs)).tolist() if docs else []


def _scanned_candidates(order: TrainingOrder, core: list[int]):
    """Documents with ``core`` inside them, ascending, from a scan of the token stream."""
    tokens = order.data.tokens
    anchor, last = core[0], -1
    for lo in range(0, len(tokens), _SCAN):
        chunk = np.asarray(tokens[lo:lo + _SCAN + len(core)])
        for p in np.flatnonzero(chunk[:_SCAN] == anchor) + lo:
            if tokens[p:p + len(core)].tolist() != core:
                continue
            inside = _inside(order, np.array([p]), len(core))
            if len(inside) and int(inside[0]) != last:
                last = int(inside[0])
                yield last
