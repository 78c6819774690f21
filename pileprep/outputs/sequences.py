"""Training samples of a step range as an MMIDIDX dataset (Pythia's pre-shuffled layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pileprep.core import atomic
from pileprep.core.files import data_path, index_path
from pileprep.formats import indexed
from pileprep.training.order import TrainingOrder
from pileprep.training.pieces import SAMPLES_AT_ONCE


def write_sequences(order: TrainingOrder, first_step: int, end_step: int, prefix: str | Path) -> int:
    """Write training samples of steps ``first_step..end_step-1``, one sequence each, in
    training order; return how many."""
    order.check_steps(first_step, end_step)
    B, width = order.cfg.batch_size, order.cfg.seq_length + 1
    n = (end_step - first_step) * B
    chunk = max(1, SAMPLES_AT_ONCE // 8)
    with atomic.atomic_path(data_path(prefix)) as tmp, open(tmp, "wb") as f:
        for lo in range(first_step * B, end_step * B, chunk):
            order.tokens_of(order.pieces(np.arange(lo, min(lo + chunk, end_step * B)))).tofile(f)
    with atomic.atomic_path(index_path(prefix)) as tmp, open(tmp, "wb") as f:
        indexed.write_index(f, order.data.dtype, n,
                            lambda: (np.full(min(1 << 20, n - s), width, np.int32)
                                     for s in range(0, n, 1 << 20)))
    return n
