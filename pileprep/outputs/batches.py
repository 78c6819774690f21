"""One step's batch written as a file: ``.npy`` (the token array) or ``.jsonl`` (a row a line
with its tokens, decoded text and sources)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pileprep.core import atomic
from pileprep.core.errors import ConfigError
from pileprep.training.order import TrainingOrder

SUFFIXES = (".npy", ".jsonl")


def check_target(path: str | Path) -> None:
    if not str(path).endswith(SUFFIXES):
        raise ConfigError(f"--output must end in .npy or .jsonl, not {str(path)!r}")


def write_batch(order: TrainingOrder, steps: int | Sequence[int], rows: Sequence[int],
                path: str | Path, tokenizer: Callable[[], object]) -> tuple[int, int]:
    """Write these rows of the batch of each of ``steps`` (one after the other: a v0 model's
    batch is two steps) to ``path`` atomically; ``tokenizer()`` (for the text of ``.jsonl``
    rows) is called only when needed. Returns the array's shape."""
    check_target(path)
    steps = [steps] if isinstance(steps, int) else list(steps)
    batch = np.concatenate([order.batch(step, list(rows)) for step in steps])
    if str(path).endswith(".npy"):
        atomic.save_npy(path, batch)
        return batch.shape
    tok = tokenizer()
    labels = [(step, r) for step in steps for r in rows]
    sources = [src for step in steps for src in order.sources(step, list(rows))]
    with atomic.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for (step, r), tokens, src in zip(labels, batch, sources):
            ids = tokens.tolist()
            f.write(json.dumps({"step": step, "row": r, "tokens": ids,
                                "text": tok.decode(ids, skip_special_tokens=False),
                                "sources": src}, ensure_ascii=False) + "\n")
    return batch.shape
