"""Where the trainer put every document copy and every sample: a per-schedule table for counts.

``pileprep count`` maps millions of index hits (document, offset) to training samples. Finding
a document's copies by scanning ``doc_idx``, and a stream sample's training sample by scanning
``shuffle_idx``, costs one pass over each per batch of hits: hours for a term with 10^8
occurrences at Pile scale (doc_idx 1.7 GB). This table is made once per schedule instead, and
then every hit maps with a few vectorized gathers:

- ``copies`` (one record per ``doc_idx`` entry, 16 bytes): sorted by document then position,
  ``start`` (stream position of the copy's first token) and ``entry`` (its position in
  ``doc_idx``). GPT-NeoX's ``doc_idx`` holds every document exactly ``epochs`` times (checked
  while building), so document d's copies are rows ``d*E .. d*E+E-1``: no search, no offsets.
- ``trained`` (int64 per stream sample): the training sample n with ``shuffle_idx[n] = k``
  (the inverse of the shuffle, a permutation: checked).

Both are built in chunks of the schedule (memory: one chunk plus a copy counter of one byte per
document), written to temporary files and moved in, then ``<label>.json`` naming the ``.idx`` and
schedule files (sizes and modification times) is written last: a rebuilt schedule is mapped
again. They live in ``OUT_DIR/ngram/stream-maps/`` (docs/formats.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from pileprep.core import atomic
from pileprep.core.errors import IntegrityError
from pileprep.core.files import NGRAM_DIR, STREAM_MAP_DIR, index_path, stream_map_files
from pileprep.core.progress import Progress
from pileprep.formats import indexed
from pileprep.formats.suffix import files_identity
from pileprep.training import schedule_files
from pileprep.training.order import TrainingOrder

VERSION = 1
COPY = np.dtype([("start", "<i8"), ("entry", "<i8")])
CHUNK = 1 << 22  # schedule entries per chunk while building (~200 MB of temporaries)


class StreamMap:
    """The table of one schedule, memory-mapped: ``copies`` and ``trained`` (see above)."""

    def __init__(self, folder: Path, label: str, epochs: int):
        names = stream_map_files(label)
        self.epochs = epochs
        self.copies = np.load(folder / names["copies"], mmap_mode="r")
        self.trained = np.load(folder / names["trained"], mmap_mode="r")
        # Hits land anywhere: a fault should not read megabytes around it.
        indexed.advise_random(self.copies, self.trained)

    def copies_of(self, docs: np.ndarray) -> np.ndarray:
        """The ``epochs`` copies of each document, in that order: ``(len(docs), epochs)`` records."""
        rows = np.asarray(docs, np.int64)[:, None] * self.epochs + np.arange(self.epochs)
        return _take(self.copies, rows.reshape(-1)).reshape(len(docs), self.epochs)

    def trained_at(self, k: np.ndarray) -> np.ndarray:
        """The training sample of each stream sample k."""
        return _take(self.trained, np.asarray(k, np.int64))


def _take(array: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``array[idx]`` gathered in ascending order (pages touched once, in file order)."""
    if not len(idx):
        return array[:0].copy()
    if (idx[1:] >= idx[:-1]).all():  # sorted already (the hits of a run of positions)
        return array[idx]
    unique, back = np.unique(idx, return_inverse=True)
    return array[unique][back.reshape(-1)]


def identity(order: TrainingOrder) -> dict:
    """What the table is made from: the ``.idx`` and the schedule's three files."""
    files = [index_path(order.prefix), *schedule_files.find(order.prefix, order.cfg).values()]
    return {"version": VERSION, "files": files_identity(files)}


def open_map(order: TrainingOrder, out_dir: str | Path, quiet: bool = True) -> StreamMap:
    """The schedule's table, made first when it is missing or was made from other files."""
    folder = Path(out_dir) / NGRAM_DIR / STREAM_MAP_DIR
    label = schedule_files.label(order.prefix, order.cfg)
    names = stream_map_files(label)
    want = identity(order)
    meta = folder / names["meta"]
    if not (meta.exists() and atomic.read_json(meta) == want):
        folder.mkdir(parents=True, exist_ok=True)
        meta.unlink(missing_ok=True)  # unfinished until the new record
        s = order.schedule
        progress = Progress("stream map", s.doc_idx.shape[0] * 8 + s.shuffle_idx.shape[0] * 8,
                            2, quiet=quiet)
        build_copies(s.doc_idx, order.data.sizes, s.epochs, folder / names["copies"], progress)
        build_trained(s.shuffle_idx, folder / names["trained"], progress)
        progress.close()
        atomic.write_json(meta, want)
    return StreamMap(folder, label, order.schedule.epochs)


def build_copies(doc_idx, sizes, epochs: int, target: Path, progress=None) -> None:
    """``copies`` for ``doc_idx``: one chunk at a time, each entry written to row
    ``doc*E + (copies of doc seen before it)``, so rows come out sorted by (document, entry)."""
    n_docs = len(sizes)
    if len(doc_idx) != n_docs * epochs:
        raise IntegrityError(f"doc_idx has {len(doc_idx):,} entries, not {n_docs:,} x {epochs}")
    seen = np.zeros(n_docs, np.min_scalar_type(epochs))  # copies of each document placed so far
    base = 0  # stream position of the chunk's first token
    with atomic.atomic_path(target) as tmp:
        out = open_memmap(tmp, mode="w+", dtype=COPY, shape=(len(doc_idx),))
        for lo, part in indexed.chunks(doc_idx, CHUNK):
            base = _place_chunk(out, seen, np.asarray(part, np.int64), lo, base, sizes, epochs)
            if progress is not None:
                progress.update(nbytes=len(part) * 8)
        out.flush()
        del out
    if progress is not None:
        progress.update(items=1)


def _place_chunk(out, seen, part: np.ndarray, lo: int, base: int, sizes, epochs: int) -> int:
    """Write one chunk's entries to their rows; return the stream position after it."""
    if len(part) and (part.min() < 0 or part.max() >= len(seen)):
        raise IntegrityError(f"doc_idx entries near {lo:,} name documents outside 0..{len(seen) - 1:,}")
    size = np.asarray(sizes[part], np.int64)
    ends = np.cumsum(size) + base
    by_doc = np.argsort(part, kind="stable")  # a document's copies in stream order
    docs = part[by_doc]
    head = np.r_[True, docs[1:] != docs[:-1]]
    rank = np.arange(len(docs)) - np.maximum.accumulate(np.where(head, np.arange(len(docs)), 0))
    copy = seen[docs].astype(np.int64) + rank
    if len(copy) and copy.max() >= epochs:
        d = int(docs[np.argmax(copy)])
        raise IntegrityError(f"doc_idx holds document {d:,} more than {epochs} times (once per epoch)")
    rows = docs * epochs + copy
    out["start"][rows] = (ends - size)[by_doc]
    out["entry"][rows] = by_doc + lo
    uniq, counts = np.unique(docs, return_counts=True)
    seen[uniq] += counts.astype(seen.dtype)
    return int(ends[-1]) if len(ends) else base


def build_trained(shuffle_idx, target: Path, progress=None) -> None:
    """``trained``: ``trained[shuffle_idx[n]] = n``, a chunk at a time; every stream sample must
    be trained exactly once (shuffle_idx is a permutation)."""
    M = len(shuffle_idx)
    with atomic.atomic_path(target) as tmp:
        out = open_memmap(tmp, mode="w+", dtype=np.int64, shape=(M,))
        out[:] = -1
        for lo, part in indexed.chunks(shuffle_idx, CHUNK):
            k = np.asarray(part, np.int64)
            if len(k) and (k.min() < 0 or k.max() >= M):
                raise IntegrityError(f"shuffle_idx entries near {lo:,} name samples outside 0..{M - 1:,}")
            out[k] = np.arange(lo, lo + len(k))
            if progress is not None:
                progress.update(nbytes=len(k) * 8)
        for lo in range(0, M, CHUNK):  # M entries in M slots: all filled iff no repeats
            if (out[lo:lo + CHUNK] < 0).any():
                raise IntegrityError("shuffle_idx is not a permutation of the stream's samples")
        out.flush()
        del out
    if progress is not None:
        progress.update(items=1)
