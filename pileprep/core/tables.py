"""Lookup tables derived once per library version and kept on disk (they take seconds to build).

Tables live in :func:`cache_dir`; each is written atomically and rebuilt when missing, damaged
or unwritable, so a cache can always be deleted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from pileprep.core import atomic


def cache_dir() -> Path:
    """``$PILEPREP_CACHE_DIR``, else ``$XDG_CACHE_HOME/pileprep`` (``~/.cache/pileprep``)."""
    if os.environ.get("PILEPREP_CACHE_DIR"):
        return Path(os.environ["PILEPREP_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pileprep"


def cached_table(name: str, build: Callable[[], np.ndarray], dtype, size: int) -> np.ndarray:
    """The array ``name`` (its file name carries the versions it depends on) of ``size``
    elements of ``dtype``, from the cache or from ``build()``."""
    path = cache_dir() / f"{name}.npy"
    try:
        table = np.load(path)
        if table.shape == (size,) and table.dtype == np.dtype(dtype):
            return table
    except (OSError, ValueError):
        pass
    table = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.save_npy(path, table)
    except OSError:
        pass  # a read-only home only costs the build again next time
    return table
