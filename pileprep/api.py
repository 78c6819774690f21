"""The Python reader API: ``pileprep.open(OUT_DIR)`` for trainers and analysis notebooks.

Everything is numpy and read-only: documents are views of the memory-mapped ``.bin`` (nothing
is copied until the caller copies), provenance comes from ``provenance.parquet``, and a
schedule is the GPT-NeoX training order saved by ``pileprep build`` or ``pileprep schedule``.
torch is imported only by :meth:`pileprep.training.order.TrainingOrder.torch_dataset`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from pileprep.core import atomic
from pileprep.core.config import ScheduleConfig
from pileprep.core.errors import NotFoundError
from pileprep.core.files import MANIFEST, REPORT, dataset_prefix
from pileprep.formats import provenance
from pileprep.formats.indexed import IndexedDataset
from pileprep.training import schedule_files
from pileprep.training.order import TrainingOrder, dataset_name, resolve_config


class Build:
    """A finished pileprep build: its documents, their provenance and its schedules.

    ``len(build)`` is the number of documents; ``build[i]`` is document i's tokens (EOD
    included) as a numpy view of the memory-mapped ``.bin``.
    """

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.name: str = dataset_name(self.out_dir)
        self.prefix: Path = dataset_prefix(self.out_dir, self.name)
        self.data = IndexedDataset(self.prefix)
        self._prov = self._columns = None

    def __repr__(self) -> str:
        return (f"pileprep.Build({str(self.out_dir)!r}: {len(self):,} documents, "
                f"{self.num_tokens:,} tokens, {self.dtype})")

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"document {i} is outside 0..{len(self) - 1}")
        return self.data[i % len(self)]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.data)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def tokens(self) -> np.ndarray:
        """Every token of the dataset, back to back (the whole ``.bin``, memory-mapped)."""
        return self.data.tokens

    @property
    def sizes(self) -> np.ndarray:
        """Tokens per document, EOD included (int32, from the ``.idx``)."""
        return self.data.sizes

    @property
    def num_tokens(self) -> int:
        return int(self.data.tokens.shape[0])

    @property
    def manifest(self) -> dict:
        """Inputs with their sha256, settings, tokenizer, and every output's sha256."""
        return atomic.read_json(self.out_dir / MANIFEST)

    @property
    def report(self) -> dict:
        """What happened to every input line (kept, duplicates, rejected by reason)."""
        return atomic.read_json(self.out_dir / REPORT)

    @property
    def provenance(self):
        """The provenance table (pyarrow), one row per document: source, line, pile_set_name,
        tokens, token_start, bytes. Read once, memory-mapped."""
        if self._prov is None:
            import pyarrow.parquet as pq

            self._prov = pq.read_table(self.out_dir / provenance.FILE_NAME, memory_map=True)
        return self._prov

    def source(self, i: int) -> dict:
        """Where document i came from: ``{"source", "line", "pile_set_name", "tokens"}``."""
        row = self.provenance.slice(i, 1).to_pylist()
        if not row:
            raise IndexError(f"document {i} is outside 0..{len(self) - 1}")
        return {k: row[0][k] for k in ("source", "line", "pile_set_name", "tokens")}

    def find(self, source: str, line: int) -> int:
        """The document index of input line ``source:line``; NotFoundError when it is not in
        the dataset (rejected, or removed as a duplicate)."""
        if self._columns is None:
            self._columns = provenance.ByDocument(self.out_dir / provenance.FILE_NAME)
        return self._columns.find(source, line)

    def schedules(self) -> list[ScheduleConfig]:
        """The schedules built for this dataset, oldest first."""
        return schedule_files.recorded(self.out_dir)

    def schedule(self, seq_length: int | None = None, batch_size: int | None = None,
                 train_iters: int | None = None, seed: int | None = None) -> TrainingOrder:
        """The training order for these GPT-NeoX settings; those not given come from the build's
        newest schedule. It must have been built (``pileprep schedule`` builds others)."""
        cfg = resolve_config(self.out_dir, seq_length=seq_length, batch_size=batch_size,
                             train_iters=train_iters, seed=seed)
        return TrainingOrder(self.out_dir, cfg, data=self.data)


def open(out_dir: str | Path) -> Build:  # noqa: A001 - the public name is pileprep.open
    """Open a pileprep output directory for reading."""
    if not (Path(out_dir) / MANIFEST).exists():
        raise NotFoundError(f"{out_dir} holds no finished pileprep build (no {MANIFEST})")
    return Build(out_dir)
