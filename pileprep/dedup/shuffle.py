"""A partitioned, disk-backed grouping ("shuffle") of numpy record arrays.

A map task sorts its rows by destination bucket and writes them as one ``.rows`` file with an
``.offsets`` file saying where each bucket's rows start. A reduce task for bucket ``k`` reads
two offsets of every map file and then only its slice of the rows. No process ever holds more
than one map task's output or one bucket's rows, so memory per worker is bounded by the bucket
size, which the caller chooses from the row count.

Both files are raw little-endian arrays, not ``.npy``: every reduce task reads every map
file's offsets, so at 25,000 partitions a file costs 25,000 times over. A positioned read of
two int64 takes ~5 us, where ``np.load`` parsed a header each time (~80 us, the most of the
LSH rounds' reading of 127,550 documents' rows).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from pileprep.core import atomic
from pileprep.core.errors import IntegrityError

FORMAT = 2  # in the fingerprints of the jobs that keep shuffle files (2: raw, was .npy)
_OFFSET = np.dtype("<i8")


def rows_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.rows")


def offsets_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.offsets")


def write(prefix: str | Path, rows: np.ndarray, bucket: np.ndarray, n_buckets: int) -> int:
    """Write ``rows`` grouped by ``bucket`` (ints in ``[0, n_buckets)``); return the row count."""
    order = np.argsort(bucket, kind="stable")
    offsets = np.searchsorted(bucket[order], np.arange(n_buckets + 1), side="left")
    # Rows first, offsets last: a map output without offsets is incomplete and never read.
    for path, arr in ((rows_path(prefix), rows[order]),
                      (offsets_path(prefix), offsets.astype(_OFFSET))):
        with atomic.atomic_path(path) as tmp:
            arr.tofile(tmp)
    return len(rows)


def _bounds(prefix: str | Path, k: int) -> tuple[int, int]:
    fd = os.open(offsets_path(prefix), os.O_RDONLY)
    try:
        raw = os.pread(fd, 2 * _OFFSET.itemsize, k * _OFFSET.itemsize)
    finally:
        os.close(fd)
    if len(raw) != 2 * _OFFSET.itemsize:
        raise IntegrityError(f"{offsets_path(prefix)}: no bucket {k}")
    lo, hi = np.frombuffer(raw, _OFFSET).tolist()
    return lo, hi


def read(prefixes: Sequence[str | Path], k: int, dtype) -> np.ndarray:
    """All rows of bucket ``k`` from the given map outputs, in map order."""
    dtype = np.dtype(dtype)
    pieces = []
    for prefix in prefixes:
        lo, hi = _bounds(prefix, k)
        if hi > lo:
            piece = np.fromfile(rows_path(prefix), dtype, hi - lo, offset=lo * dtype.itemsize)
            if len(piece) != hi - lo:
                raise IntegrityError(f"{rows_path(prefix)}: shorter than its offsets say")
            pieces.append(piece)
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype)
