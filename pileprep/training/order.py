"""What the trainer saw: samples, batches and their source documents, from a built schedule.

A training sample is L+1 consecutive tokens of the shuffled document stream, made of *pieces*
(:mod:`.pieces`): slices of documents. Tokens are read as views of the memory-mapped ``.bin``
(a document starts at ``pointers[doc] / itemsize``), and each piece maps to its source
``(source, line, pile_set_name)`` through the provenance table.

Every source record, in the API and in every command's output, has one shape::

    {"doc", "source", "line", "pile_set_name", "doc_start", "doc_end", "row_start", "row_end"}

token ranges end-exclusive: the piece is tokens ``doc_start:doc_end`` of document ``doc`` and
sits at ``row_start:row_end`` of the training row.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from pileprep.core import atomic
from pileprep.core.config import ScheduleConfig
from pileprep.core.errors import ConfigError, IntegrityError, NotFoundError
from pileprep.core.files import (ITEM_SOURCES, ITEM_SOURCES_NAMES, ITEM_SOURCES_OFFSETS,
                                 MANIFEST, ORDER_LINK, PROVENANCE, dataset_prefix)
from pileprep.formats import provenance
from pileprep.formats.indexed import FileArray, IndexedDataset
from pileprep.training import pieces as pieces_of, schedule_files
from pileprep.training.pieces import Pieces, Preshuffled


def dataset_name(out_dir: str | Path) -> str:
    manifest = Path(out_dir) / MANIFEST
    if not manifest.exists():
        raise NotFoundError(f"{out_dir} holds no pileprep build (no {MANIFEST})")
    return atomic.read_json(manifest)["settings"]["pack"]["name"]


def preshuffled(out_dir: str | Path) -> dict | None:
    """``{"seq_length", "batch_size", "items"}`` of an adopted preshuffled dataset (its items
    are the training samples, in order), else None."""
    manifest = Path(out_dir) / MANIFEST
    if not manifest.exists():
        raise NotFoundError(f"{out_dir} holds no pileprep build (no {MANIFEST})")
    return (atomic.read_json(manifest).get("adopted") or {}).get("preshuffled")


def resolve_config(out_dir: str | Path, **given) -> ScheduleConfig:
    """Settings not given come from the build's newest schedule (else Pythia's defaults); a
    preshuffled dataset's from its items (their length, and every whole batch of them)."""
    given = {k: v for k, v in given.items() if v is not None}
    items = preshuffled(out_dir)
    if items is not None:
        return _preshuffled_config(items, given)
    entries = schedule_files.recorded(out_dir)
    base = entries[-1] if entries else ScheduleConfig()
    cfg = replace(base, **given)
    cfg.validate()
    return cfg


def _preshuffled_config(items: dict, given: dict) -> ScheduleConfig:
    L = items["seq_length"]
    if given.get("seq_length", L) != L:
        raise ConfigError(f"schedule.seq_length is {L} in a preshuffled dataset (its items are "
                          f"{L + 1} tokens), not {given['seq_length']}")
    B = given.get("batch_size", items["batch_size"])
    cfg = replace(ScheduleConfig(seq_length=L, batch_size=B, train_iters=max(items["items"] // B, 1)),
                  **{k: v for k, v in given.items() if k in ("train_iters", "seed")})
    cfg.validate()
    if cfg.train_iters * B > items["items"]:
        raise ConfigError(f"schedule.train_iters {cfg.train_iters} x schedule.batch_size {B} is more "
                          f"than the preshuffled dataset's {items['items']:,} items")
    return cfg


class TrainingOrder:
    """A built dataset with one schedule: ``sample(n)``, ``batch(step)``, ``sources(step)``."""

    def __init__(self, out_dir: str | Path, cfg: ScheduleConfig | None = None,
                 data: IndexedDataset | None = None):
        self.out_dir = Path(out_dir)
        self.prefix = dataset_prefix(out_dir, dataset_name(out_dir))
        self.cfg = cfg or resolve_config(out_dir)
        self.data = data if data is not None else IndexedDataset(self.prefix)
        self.sizes, self._pointers, self._tokens = self.data.scattered()
        self._prov = self._linked = self._content_rows = None
        manifest = atomic.read_json(self.out_dir / MANIFEST)
        self._outputs = frozenset(manifest.get("outputs", {}))  # read once: sources are hot
        items = (manifest.get("adopted") or {}).get("preshuffled")
        if items is not None:  # the items are the samples: no index maps
            if cfg is not None:  # settings given by a caller: checked as a user's would be
                self.cfg = _preshuffled_config(items, {k: getattr(cfg, k) for k in
                                                       ("seq_length", "batch_size", "train_iters")})
            self.schedule = Preshuffled(len(self.data))
            return
        s = schedule_files.load(self.prefix, self.cfg, self.data.sizes)
        # Samples are scattered over the whole dataset and schedule: read them with pread, so
        # a batch costs what it reads, not the page-cache folios a memory map would hold.
        self.schedule = replace(s, doc_idx=FileArray.of(s.doc_idx), sample_idx=FileArray.of(s.sample_idx),
                                shuffle_idx=FileArray.of(s.shuffle_idx))
        if len(self.schedule.doc_idx) != len(self.data) * self.schedule.epochs:
            raise IntegrityError(f"schedule files for {self.prefix} do not match the dataset "
                                 f"({len(self.schedule.doc_idx)} doc_idx entries for "
                                 f"{len(self.data)} documents x {self.schedule.epochs} epochs)")

    def __repr__(self) -> str:
        c = self.cfg
        return (f"TrainingOrder(seq_length={c.seq_length}, batch_size={c.batch_size}, "
                f"train_iters={c.train_iters}, seed={c.seed}; {self.schedule.epochs} epoch(s))")

    @property
    def num_trained_samples(self) -> int:
        """Samples the trainer consumes: ``train_iters * batch_size``."""
        return self.cfg.train_iters * self.cfg.batch_size

    def check_steps(self, first: int, end: int) -> None:
        """Steps ``first .. end-1`` are trained steps (a ConfigError names the range if not)."""
        T = self.cfg.train_iters
        if not 0 <= first < end <= T:
            raise ConfigError(f"steps {first}:{end} are outside 0:{T} (train_iters={T})")

    def rows(self, step: int, rows: list[int] | None = None) -> list[int]:
        """The rows asked for (default all) of the batch at ``step``, checked."""
        if not 0 <= step < self.cfg.train_iters:
            raise ConfigError(f"step {step} is outside 0..{self.cfg.train_iters - 1} "
                              f"(train_iters={self.cfg.train_iters})")
        B = self.cfg.batch_size
        rows = list(range(B)) if rows is None else rows
        bad = [r for r in rows if not 0 <= r < B]
        if bad:
            raise ConfigError(f"row {bad[0]} is outside 0..{B - 1} (batch_size={B})")
        return rows

    def samples(self, step: int, rows: list[int] | None = None) -> np.ndarray:
        """Training sample numbers of these rows of the batch at ``step``."""
        return step * self.cfg.batch_size + np.asarray(self.rows(step, rows), np.int64)

    # -- tokens ------------------------------------------------------------------------------

    def pieces(self, samples) -> Pieces:
        """The document pieces of training samples ``samples`` (see :mod:`.pieces`)."""
        return pieces_of.expand(self.schedule, self.sizes, samples)

    def tokens_of(self, p: Pieces) -> np.ndarray:
        """The tokens of the pieces, back to back (a sample's L+1 tokens for its pieces)."""
        starts = np.asarray(self._pointers[p.doc]) // self.data.dtype.itemsize + p.offset
        if hasattr(self._tokens, "will_need"):  # one wait on a cold disk, not one per piece
            self._tokens.will_need(starts, p.tokens)
        return np.concatenate([self._tokens[a:a + n] for a, n in zip(starts.tolist(), p.tokens.tolist())]
                              or [np.zeros(0, self.data.dtype)])

    def sample(self, n: int) -> np.ndarray:
        """The L+1 tokens of training sample n, as GPT-NeoX's GPT2Dataset returns them."""
        return self.tokens_of(self.pieces([n]))

    def sample_array(self, samples) -> np.ndarray:
        """Array (len(samples), L+1) of the training samples' tokens."""
        p = self.pieces(samples)
        out = self.tokens_of(p)
        return out.reshape(len(np.atleast_1d(samples)), self.cfg.seq_length + 1)

    def batch(self, step: int, rows: list[int] | None = None) -> np.ndarray:
        """Array (len(rows), L+1) of the batch consumed at optimizer step ``step`` (from 0)."""
        return self.sample_array(self.samples(step, rows))

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
        from pileprep.training.torchdata import TrainingSamples

        return TrainingSamples(self, start_step, end_step)

    # -- sources -----------------------------------------------------------------------------

    @property
    def linked(self) -> "TrainingOrder | None":
        """For a preshuffled dataset whose items were proven equal to another dataset's
        samples (``pileprep compare``): that dataset's order, which knows their documents."""
        if self._linked is None and isinstance(self.schedule, Preshuffled):
            link = self.out_dir / ORDER_LINK
            if ORDER_LINK in self._outputs and link.exists():
                self._linked = self._open_link(link)
        return self._linked

    def _open_link(self, link: Path) -> "TrainingOrder":
        rec = atomic.read_json(link)
        try:
            linked = TrainingOrder(rec["dataset"], ScheduleConfig(**rec["schedule"]))
        except NotFoundError:
            raise NotFoundError(f"{link}: the dataset it links to, {rec['dataset']}, is gone; "
                                "adopt it again or remove the link") from None
        if link_identity(linked) != rec.get("identity"):
            raise IntegrityError(f"{link}: {rec['dataset']} changed since it was compared with "
                                 "this dataset; run pileprep compare again")
        if linked.cfg.batch_size != self.cfg.batch_size:
            raise ConfigError(f"schedule.batch_size {self.cfg.batch_size}: the linked schedule's "
                              f"batches are {linked.cfg.batch_size} samples (a v0 model's "
                              "4M-token step is --v0-step)")
        return linked

    def _content(self):
        """The pieces of this preshuffled dataset's items found by content (``pileprep
        align``), mapped: ``(rows, offsets, names)``, or None."""
        if self._content_rows is None and ITEM_SOURCES in self._outputs:
            self._content_rows = (np.load(self.out_dir / ITEM_SOURCES, mmap_mode="r"),
                                  np.load(self.out_dir / ITEM_SOURCES_OFFSETS, mmap_mode="r"),
                                  atomic.read_json(self.out_dir / ITEM_SOURCES_NAMES))
        return self._content_rows

    def _content_sources(self, n: int) -> list[dict]:
        """Source records of item n's pieces; unmatched ones name no source nor range."""
        rows, offsets, names = self._content()
        out = []
        for r in rows[int(offsets[n]):int(offsets[n + 1])]:
            found = int(r["shard"]) >= 0
            start = int(r["doc_start"]) if found else None
            out.append({"doc": None, "source": names["sources"][int(r["shard"])] if found else None,
                        "line": int(r["line"]) if found else None,
                        "pile_set_name": names["subsets"][int(r["subset"])] if found else "",
                        "doc_start": start, "doc_end": start + int(r["ntok"]) if found else None,
                        "row_start": int(r["row_start"]),
                        "row_end": int(r["row_start"]) + int(r["ntok"])})
        return out

    def require_schedule(self, what: str) -> None:
        """``what`` needs the documents' order: refused on a preshuffled dataset not linked."""
        if isinstance(self.schedule, Preshuffled):
            raise ConfigError(f"{what} needs the documents of the samples: link this "
                              "preshuffled dataset to the same data's index maps first "
                              f"(pileprep compare {self.out_dir} IDXMAPS_DIR)")

    def for_documents(self) -> "TrainingOrder":
        """The order whose pieces are documents: the linked one of a linked preshuffled
        dataset (same samples, same tokens: proven), else this one."""
        return self.linked or self

    def sources_of(self, samples: np.ndarray, p: Pieces | None = None) -> list[list[dict]]:
        """Source records of each of ``samples`` (``p``: their pieces, when known)."""
        if self.linked is not None:
            return self.linked.sources_of(samples)
        if isinstance(self.schedule, Preshuffled) and self._content() is not None:
            return [self._content_sources(int(n)) for n in samples]
        pieces = p if p is not None else self.pieces(np.unique(samples))
        return group_by_sample(samples, pieces, self.describe)

    def provenance(self) -> provenance.ByDocument:
        """The provenance table, read by document (a few row groups at a time)."""
        if self._prov is None:
            self._prov = provenance.ByDocument(self.out_dir / PROVENANCE)
        return self._prov

    def describe(self, p: Pieces) -> list[dict]:
        """One source record per piece (the shape in this module's docstring)."""
        names, lines, subsets = self.provenance().get(p.doc)
        return [{"doc": d, "source": s, "line": int(ln) if s is not None else None, "pile_set_name": ss,
                 "doc_start": o, "doc_end": o + n, "row_start": r, "row_end": r + n}
                for d, s, ln, ss, o, n, r in zip(p.doc.tolist(), names, lines.tolist(), subsets,
                                                 p.offset.tolist(), p.tokens.tolist(),
                                                 p.row_start.tolist())]

    def describe_doc(self, doc: int) -> dict:
        """``{"doc", "source", "line", "pile_set_name", "tokens"}`` of one document."""
        whole = Pieces(*(np.array([v], np.int64) for v in (0, doc, 0, int(self.data.sizes[doc]), 0)))
        rec = self.describe(whole)[0]
        return {"doc": doc, "source": rec["source"], "line": rec["line"],
                "pile_set_name": rec["pile_set_name"], "tokens": int(self.data.sizes[doc])}

    def sample_sources(self, n: int) -> list[dict]:
        """The documents training sample n came from, with token ranges in each."""
        return self.sources_of(np.array([n], np.int64))[0]

    def sources(self, step: int, rows: list[int] | None = None) -> list[list[dict]]:
        """For each row, the documents its tokens came from and which token ranges."""
        return self.sources_of(self.samples(step, rows))


def link_identity(order: TrainingOrder) -> dict:
    """What a link to ``order`` was proven against: its data and schedule files (sizes and
    modification times), so a link outlives no rebuild of either."""
    from pileprep.formats.suffix import data_identity, files_identity

    files = [p for naming in ("neox", "v1.0")
             for p in schedule_files.paths(order.prefix, order.cfg, naming).values() if p.exists()]
    return {"data": data_identity(order.prefix), "schedule": files_identity(files[:3])}


def group_by_sample(samples: np.ndarray, p: Pieces, describe) -> list[list[dict]]:
    """Source records of the pieces, one list per sample of ``samples`` (in that order; the
    pieces hold each sample once)."""
    out: dict[int, list[dict]] = {int(n): [] for n in samples}
    for n, rec in zip(p.sample.tolist(), describe(p)):
        out[n].append(rec)
    return [out[int(n)] for n in samples]
