"""A partitioned, disk-backed grouping ("shuffle") of numpy record arrays.

A map task sorts its rows by destination bucket and writes them as one ``.rows.npy`` file with
an ``.offsets.npy`` file saying where each bucket's rows start. A reduce task for bucket ``k``
memory-maps every map file and reads only its slice. No process ever holds more than one map
task's output or one bucket's rows, so memory per worker is bounded by the bucket size, which
the caller chooses from the row count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pileprep.core import atomic


def rows_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.rows.npy")


def offsets_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.offsets.npy")


def write(prefix: str | Path, rows: np.ndarray, bucket: np.ndarray, n_buckets: int) -> int:
    """Write ``rows`` grouped by ``bucket`` (ints in ``[0, n_buckets)``); return the row count."""
    order = np.argsort(bucket, kind="stable")
    offsets = np.searchsorted(bucket[order], np.arange(n_buckets + 1), side="left")
    # Rows first, offsets last: a map output without offsets is incomplete and never read.
    for path, arr in ((rows_path(prefix), rows[order]), (offsets_path(prefix), offsets)):
        atomic.save_npy(path, arr)
    return len(rows)


def read(prefixes: Sequence[str | Path], k: int, dtype) -> np.ndarray:
    """All rows of bucket ``k`` from the given map outputs, in map order."""
    pieces = []
    for prefix in prefixes:
        offsets = np.load(offsets_path(prefix))
        lo, hi = int(offsets[k]), int(offsets[k + 1])
        if hi > lo:
            pieces.append(np.load(rows_path(prefix), mmap_mode="r")[lo:hi])
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype)
