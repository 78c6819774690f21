"""What the trainer saw: samples, batches and their source documents, from a built schedule.

A training sample is L+1 consecutive tokens of the shuffled document stream, made of *pieces*:
``(doc, offset, length)`` slices of documents. Tokens are read as views of the memory-mapped
``.bin`` (a document starts at ``pointers[doc] / itemsize``), and each piece maps to its source
``(source, line, pile_set_name)`` through the provenance table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from . import atomic, schedule as sched
from .config import ScheduleConfig
from .config import ConfigError
from .indexed import IndexedDataset
from .pack import dataset_prefix

def dataset_name(out_dir: str | Path) -> str:
    manifest = Path(out_dir) / "manifest.json"
    if not manifest.exists():
        raise ConfigError(f"{out_dir} holds no pileprep build (no manifest.json)")
    return atomic.read_json(manifest)["settings"]["pack"]["name"]


def resolve_config(out_dir: str | Path, **given) -> ScheduleConfig:
    """Settings not given come from the build's newest schedule (else Pythia's defaults)."""
    path = Path(out_dir) / sched.SCHEDULES
    base = ScheduleConfig()
    if path.exists():
        entries = atomic.read_json(path)
        if entries:
            base = ScheduleConfig(**entries[-1])
    cfg = replace(base, **{k: v for k, v in given.items() if v is not None})
    cfg.validate()
    return cfg


@dataclass(frozen=True)
class Piece:
    doc: int
    offset: int
    length: int


class TrainingOrder:
    """A built dataset with one schedule: ``sample(n)``, ``batch(step)``, ``sources(step)``."""

    def __init__(self, out_dir: str | Path, cfg: ScheduleConfig | None = None,
                 data: IndexedDataset | None = None):
        self.out_dir = Path(out_dir)
        self.prefix = dataset_prefix(out_dir, dataset_name(out_dir))
        self.cfg = cfg or resolve_config(out_dir)
        self.data = data if data is not None else IndexedDataset(self.prefix)
        self.data.advise_random()  # samples are scattered over the whole .bin
        self.schedule = sched.load(self.prefix, self.cfg)
        if len(self.schedule.doc_idx) != len(self.data) * self.schedule.epochs:
            raise ConfigError(f"schedule files for {self.prefix} do not match the dataset "
                              f"({len(self.schedule.doc_idx)} doc_idx entries for {len(self.data)} "
                              f"documents x {self.schedule.epochs} epochs)")
        self._prov = None

    def __repr__(self) -> str:
        c = self.cfg
        return (f"TrainingOrder(seq_length={c.seq_length}, batch_size={c.batch_size}, "
                f"train_iters={c.train_iters}, seed={c.seed}; {self.schedule.epochs} epoch(s))")

    @property
    def steps(self) -> int:
        return self.cfg.train_iters

    @property
    def num_trained_samples(self) -> int:
        """Samples the trainer consumes: ``train_iters * batch_size``."""
        return self.cfg.train_iters * self.cfg.batch_size

    def _check_step(self, step: int) -> None:
        if not 0 <= step < self.cfg.train_iters:
            raise ConfigError(f"step {step} is outside 0..{self.cfg.train_iters - 1} "
                              f"(train_iters={self.cfg.train_iters})")

    def pieces(self, n: int) -> list[Piece]:
        """The document slices of training sample n (n-th sample consumed by the trainer)."""
        k = int(self.schedule.shuffle_idx[n])
        (i0, o0), (i1, o1) = self.schedule.sample_idx[k], self.schedule.sample_idx[k + 1]
        i0, o0, i1, o1 = int(i0), int(o0), int(i1), int(o1)
        doc_idx, sizes = self.schedule.doc_idx, self.data.sizes
        if i0 == i1:
            return [Piece(int(doc_idx[i0]), o0, o1 - o0 + 1)]
        first = int(doc_idx[i0])
        out = [Piece(first, o0, int(sizes[first]) - o0)]
        out += [Piece(int(d), 0, int(sizes[d])) for d in doc_idx[i0 + 1:i1]]
        out.append(Piece(int(doc_idx[i1]), 0, o1 + 1))
        return out

    def sample(self, n: int) -> np.ndarray:
        """The L+1 tokens of training sample n, as GPT-NeoX's GPT2Dataset returns them."""
        isz, ptr = self.data.dtype.itemsize, self.data.pointers
        parts = []
        for p in self.pieces(n):
            start = int(ptr[p.doc]) // isz + p.offset
            parts.append(self.data.tokens[start:start + p.length])
        return np.concatenate(parts)

    def rows(self, step: int, rows: list[int] | None = None) -> list[int]:
        self._check_step(step)
        B = self.cfg.batch_size
        rows = list(range(B)) if rows is None else rows
        bad = [r for r in rows if not 0 <= r < B]
        if bad:
            raise ConfigError(f"row {bad[0]} is outside 0..{B - 1} (batch_size={B})")
        return rows

    def batch(self, step: int, rows: list[int] | None = None) -> np.ndarray:
        """Array (len(rows), L+1) of the batch consumed at optimizer step ``step`` (from 0)."""
        rows = self.rows(step, rows)
        out = np.empty((len(rows), self.cfg.seq_length + 1), dtype=self.data.dtype)
        for i, r in enumerate(rows):
            out[i] = self.sample(step * self.cfg.batch_size + r)
        return out

    def iter_batches(self, start_step: int = 0, end_step: int | None = None
                     ) -> Iterator[tuple[int, np.ndarray]]:
        """``(step, batch)`` for steps ``start_step .. end_step-1`` (default: to the end), each
        batch an array (batch_size, L+1): what a trainer resuming at ``start_step`` reads."""
        T = self.cfg.train_iters
        end = T if end_step is None else end_step
        if not 0 <= start_step <= end <= T:
            raise ConfigError(f"steps {start_step}:{end} are outside 0:{T} (train_iters={T})")
        for step in range(start_step, end):
            yield step, self.batch(step)

    def torch_dataset(self, start_step: int = 0, end_step: int | None = None):
        """A ``torch.utils.data.Dataset`` of the training samples of these steps, in training
        order (int64 tensors of L+1 tokens); imports torch only now."""
        from .torchdata import TrainingSamples

        return TrainingSamples(self, start_step, end_step)

    def provenance(self):
        """Provenance columns as numpy/py lists, loaded once (source, line, pile_set_name)."""
        if self._prov is None:
            from . import provenance

            self._prov = provenance.lookup_columns(provenance.read(
                self.out_dir, columns=["source", "line", "pile_set_name"]))
        return self._prov

    def describe(self, piece: Piece, row_start: int) -> dict:
        source, line, subset = self.provenance()
        return {"doc": piece.doc, "source": source.dictionary[source.indices[piece.doc].as_py()].as_py(),
                "line": int(line[piece.doc]),
                "pile_set_name": subset.dictionary[subset.indices[piece.doc].as_py()].as_py(),
                "doc_tokens": [piece.offset, piece.offset + piece.length],
                "row_tokens": [row_start, row_start + piece.length]}

    def describe_doc(self, doc: int) -> dict:
        info = self.describe(Piece(doc, 0, int(self.data.sizes[doc])), 0)
        return {"source": info["source"], "line": info["line"],
                "pile_set_name": info["pile_set_name"], "tokens": int(self.data.sizes[doc])}

    def sample_sources(self, n: int) -> list[dict]:
        """The documents training sample n came from, with token ranges in each."""
        pos, out = 0, []
        for p in self.pieces(n):
            out.append(self.describe(p, pos))
            pos += p.length
        return out

    def sources(self, step: int, rows: list[int] | None = None) -> list[list[dict]]:
        """For each row, the documents its tokens came from and which token ranges."""
        return [self.sample_sources(step * self.cfg.batch_size + r) for r in self.rows(step, rows)]
