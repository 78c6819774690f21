"""What a range of training steps contains, computed a chunk of samples at a time.

Built on :mod:`.pieces`: every (sample, document, tokens) piece of a step range, without a
Python loop per sample, which is what the subset-mix plot, ``pileprep seen`` and the batch
summary need over thousands of steps. Summaries of a range (``seen``, ``subset_mix``) stream
its pieces in chunks of ``RANGE_SAMPLES`` samples and keep only their totals, so a
range of 143,000 steps (300 B tokens of pieces) is never held at once.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pileprep.formats import indexed
from pileprep.formats.indexed import FileArray
from pileprep.training import pieces as pieces_of
from pileprep.training.order import TrainingOrder
from pileprep.training.pieces import Pieces


def pieces(order: TrainingOrder, first_step: int, end_step: int) -> Pieces:
    """Every piece of the samples of steps ``first_step .. end_step-1``, in training order."""
    order.check_steps(first_step, end_step)
    B = order.cfg.batch_size
    return pieces_of.of_range(order.schedule, order.sizes, first_step * B, end_step * B)


# Samples summarised at once (~100 MB of pieces): large, because a chunk's scattered rows are
# read in one pass over each schedule array once they are dense enough (FileArray), and that
# pass costs the same for a thousand rows as for a million.
RANGE_SAMPLES = 1 << 20


def chunks(order: TrainingOrder, first_step: int, end_step: int) -> Iterator[Pieces]:
    """The pieces of steps ``first_step .. end_step-1`` in training order, a chunk of
    ``RANGE_SAMPLES`` samples at a time."""
    order.check_steps(first_step, end_step)
    B = order.cfg.batch_size
    for a in range(first_step * B, end_step * B, RANGE_SAMPLES):
        samples = np.arange(a, min(a + RANGE_SAMPLES, end_step * B))
        yield pieces_of.expand(order.schedule, order.sizes, samples)


def subset_codes(order: TrainingOrder, docs: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """For each of ``docs``, the index of its ``pile_set_name`` in the returned sorted names;
    only the provenance rows of these documents are read."""
    unique, back = np.unique(docs, return_inverse=True)
    codes, names = order.provenance().subset_codes(unique)
    return codes[back.reshape(-1)], names


def subset_tokens(order: TrainingOrder, p: Pieces, bins: np.ndarray | None = None,
                  n_bins: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Tokens per (bin, subset): ``bins[i]`` is the bin of piece i (default: one bin); the
    table has ``n_bins`` rows (default: up to the last bin used)."""
    codes, names = subset_codes(order, p.doc)
    names = names or [""]
    bins = np.zeros(len(p.doc), np.int64) if bins is None else bins
    if n_bins is None:
        n_bins = int(bins.max()) + 1 if len(bins) else 1
    flat = bins * len(names) + codes
    table = np.bincount(flat, weights=p.tokens, minlength=n_bins * len(names))
    return table.reshape(n_bins, len(names)).astype(np.int64), names


def documents(p: Pieces) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct documents of the pieces: ``(doc, tokens seen, first sample seen)``, by doc."""
    order = np.lexsort((p.sample, p.doc))
    doc, sample, tok = p.doc[order], p.sample[order], p.tokens[order]
    head = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])
    return doc[head], np.add.reduceat(tok, head) if len(head) else tok[:0], sample[head]


class SubsetTable:
    """Tokens per (bin, subset) summed over chunks of pieces, each chunk with its own names."""

    def __init__(self, n_bins: int):
        self.n_bins, self.columns = n_bins, {}

    def add(self, table: np.ndarray, names: list[str]) -> None:
        for j, name in enumerate(names):
            column = self.columns.setdefault(name, np.zeros(self.n_bins, np.int64))
            column += table[:, j]

    def result(self) -> tuple[np.ndarray, list[str]]:
        """The table and its subset names, sorted (as :func:`subset_tokens` gives them)."""
        names = sorted(self.columns) or [""]
        table = np.stack([self.columns.get(n, np.zeros(self.n_bins, np.int64)) for n in names], axis=1)
        return table, names


# Distinct documents a step-range summary holds in memory before spilling them to disk: ~50 MB
# of totals, several times that while runs merge, next to a chunk of pieces (at 2^22, `seen`
# over Pythia's whole run peaked at 1.06 GiB).
SPILL_DOCS = 1 << 21
_RUN = np.dtype([("doc", "<i8"), ("tokens", "<i8"), ("first", "<i8")])


class DocumentTotals:
    """Per distinct document, tokens seen and the first step seen, over chunks of pieces.

    Each chunk's totals are kept as a run and merged into one sorted run whenever the kept
    runs outgrow it (amortised linear). Past ``SPILL_DOCS`` documents the merged run goes to
    a file in a temporary directory, and the result merges those files a range of documents
    at a time into memory-mapped arrays: a range of the whole training run (every document of
    the Pile) is summarised in bounded memory."""

    def __init__(self, batch_size: int = 1):
        self.batch_size = batch_size
        self.runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.files: list[Path] = []
        self._tmp: Path | None = None

    def add(self, p: Pieces) -> None:
        doc, tokens, first_sample = documents(p)
        self.runs.append((doc, tokens, first_sample // self.batch_size))
        if sum(len(r[0]) for r in self.runs[1:]) > len(self.runs[0][0]):
            self.runs = [_merge(self.runs)]
        if len(self.runs[0][0]) > SPILL_DOCS:
            self._spill()

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(doc, tokens seen, first step seen)``, by doc; memory-mapped when spilled."""
        if self.files:
            if self.runs:
                self._spill()
            return self._merge_files()
        if len(self.runs) != 1:
            self.runs = [_merge(self.runs)] if self.runs else [(np.zeros(0, np.int64),) * 3]
        return self.runs[0]

    def _spill(self) -> None:
        run = _merge(self.runs)
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="pileprep-seen-"))
            # Removed with this object, unless a result maps its files (then with the result).
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        self.runs = []
        rec = np.empty(len(run[0]), _RUN)
        rec["doc"], rec["tokens"], rec["first"] = run
        del run
        self.files.append(self._tmp / f"run-{len(self.files)}.bin")
        rec.tofile(self.files[-1])

    def _merge_files(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The spilled runs merged, a range of SPILL_DOCS / 4 document ids at a time (each run
        is sorted by doc: a range is one slice of each), appended to three raw files."""
        runs = [FileArray(f, _RUN, (f.stat().st_size // _RUN.itemsize,)) for f in self.files]
        at = [0] * len(runs)
        ends = max(int(r[len(r) - 1]["doc"]) for r in runs if len(r)) + 1
        step = max(1, SPILL_DOCS // 4)
        outs = {k: open(self._tmp / f"{k}.bin", "wb") for k in _RUN.names}
        count = 0
        with outs["doc"], outs["tokens"], outs["first"]:
            for hi in range(step, ends + step, step):
                parts = []
                for i, r in enumerate(runs):
                    stop = _first_at_least(r, hi, at[i])
                    part = r[at[i]:stop]
                    parts.append((part["doc"], part["tokens"], part["first"]))
                    at[i] = stop
                doc, tokens, first = _merge(parts)
                for k, arr in zip(_RUN.names, (doc, tokens, first)):
                    arr.astype(np.int64).tofile(outs[k])
                count += len(doc)
        for f in self.files:
            f.unlink()
        self.files = []
        mapped = tuple(np.memmap(self._tmp / f"{k}.bin", np.int64, "r", shape=(count,)) if count
                       else np.zeros(0, np.int64) for k in _RUN.names)
        self._cleanup.detach()
        for array in mapped:  # the files stay while the arrays do (chunked reads reopen them)
            weakref.finalize(array, shutil.rmtree, self._tmp, True)
        return mapped


def _merge(runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of ``(doc, tokens, first step)``, each sorted by doc, as one: tokens summed, the
    first step the smallest."""
    doc = np.concatenate([r[0] for r in runs])
    if not len(doc):
        return doc, doc.copy(), doc.copy()
    # A stable sort of sorted runs back to back merges them (timsort finds the runs), and
    # needs no second key: the first step is a minimum below.
    order = np.argsort(doc, kind="stable")
    doc = doc[order]
    head = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])
    tokens = np.add.reduceat(np.concatenate([r[1] for r in runs])[order], head)
    first = np.minimum.reduceat(np.concatenate([r[2] for r in runs])[order], head)
    return doc[head], tokens, first


def _first_at_least(run: FileArray, doc: int, lo: int) -> int:
    """The first position from ``lo`` of a run sorted by doc whose doc is >= ``doc``."""
    hi = len(run)
    while lo < hi:
        mid = (lo + hi) // 2
        if int(run[mid]["doc"]) < doc:
            lo = mid + 1
        else:
            hi = mid
    return lo


@dataclass
class Seen:
    """What steps ``first .. end-1`` trained on."""

    first: int
    end: int
    sequences: int
    subsets: list[tuple[str, int]]  # (pile_set_name, tokens), most tokens first, zero left out
    docs: np.ndarray  # distinct documents, by index
    tokens_seen: np.ndarray  # tokens of each seen in the range
    first_step: np.ndarray  # the first step of the range each was seen in

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self.subsets)

    def top(self, k: int) -> np.ndarray:
        """Positions (in ``docs``) of the k documents with the most tokens seen (ties: the
        lower position first), chosen a chunk at a time: ``tokens_seen`` may be a map of a
        file with a row per document of the dataset."""
        best = np.zeros(0, np.int64)
        if k <= 0:
            return best
        for lo, part in indexed.chunks(self.tokens_seen, SPILL_DOCS):
            if k < len(part):
                cut = np.partition(part, len(part) - k)[len(part) - k]  # the k-th largest
                above, equal = np.flatnonzero(part > cut), np.flatnonzero(part == cut)
                keep = np.concatenate([above, equal[:k - len(above)]])
            else:
                keep = np.arange(len(part))
            best = np.concatenate([best, keep + lo])
            values = np.asarray(self.tokens_seen[best])
            best = best[np.lexsort((best, -values))][:k]
        return best


def seen(order: TrainingOrder, first: int, end: int) -> Seen:
    order = order.for_documents()
    subsets, totals = SubsetTable(1), DocumentTotals(order.cfg.batch_size)
    for p in chunks(order, first, end):
        subsets.add(*subset_tokens(order, p))
        totals.add(p)
    table, names = subsets.result()
    docs, tokens_seen, first_step = totals.result()
    ranked = [(names[j], int(table[0, j])) for j in np.argsort(-table[0], kind="stable") if table[0, j]]
    return Seen(first, end, (end - first) * order.cfg.batch_size, ranked, docs, tokens_seen, first_step)


def subset_mix(order: TrainingOrder, first: int, end: int, bins: int | list[int]
               ) -> tuple[np.ndarray, list[str], list[int]]:
    """Tokens per (step range, subset) over ``bins`` equal step ranges of ``first .. end-1``
    (or between the edges ``bins`` lists): the table, the subset names and the range edges."""
    order = order.for_documents()
    edges = bins if isinstance(bins, list) else sorted(set(
        np.linspace(first, end, min(bins, end - first) + 1).round().astype(int).tolist()))
    inner = np.asarray(edges[1:-1])
    mix = SubsetTable(len(edges) - 1)
    for p in chunks(order, first, end):
        bin_of = np.searchsorted(inner, p.sample // order.cfg.batch_size, side="right")
        mix.add(*subset_tokens(order, p, bin_of, len(edges) - 1))
    table, names = mix.result()
    return table, names, edges


@dataclass
class BatchSummary:
    step: int
    rows: list[int]
    documents: int
    subsets: list[tuple[str, int]]  # tokens per subset, most first
    sources: list[list[dict]]  # per row, its source records


def batch_summary(order: TrainingOrder, step: int, rows: list[int] | None = None) -> BatchSummary:
    rows = order.rows(step, rows)
    sources = order.sources(step, rows)
    # A piece found by content names its raw document, not a document of this dataset.
    docs = {rec["doc"] if rec["doc"] is not None else (rec["source"], rec["line"])
            for row in sources for rec in row if rec["doc"] is not None or rec["source"]}
    subsets: dict[str, int] = {}
    for row in sources:
        for rec in row:
            subsets[rec["pile_set_name"]] = subsets.get(rec["pile_set_name"], 0) + rec["row_end"] - rec["row_start"]
    return BatchSummary(step, rows, len(docs), sorted(subsets.items(), key=lambda kv: -kv[1]), sources)
