"""How often a token sequence occurs: in the corpus, and in the training stream step by step.

The suffix-array index (:mod:`pileprep.formats.suffix`) gives every position of a sequence q
(m tokens) in the dataset. The trainer reads another stream: the documents in ``doc_idx``
order, cut into samples of L+1 tokens (sample k is stream positions ``k*L .. k*L+L``), sample
k trained as training sample n where ``shuffle_idx[n] = k``. An occurrence in that stream is

- inside one document: a position found in the index with ``offset + m <= size``, once per
  copy of the document in ``doc_idx`` (every epoch's copy sits elsewhere in the stream);
- across a boundary between two documents that the shuffle put side by side: the first
  boundary it crosses ends a document X, so q's first j tokens are X's last j tokens (found in
  the index too: an occurrence of ``q[:j]`` ending where X ends), and the stream after that
  copy of X must continue with ``q[j:]``, which is read and compared. When every document ends
  with the same token (EOD), only the j with ``q[j-1] == EOD`` can qualify.

A stream occurrence at position P is inside sample k when ``k*L <= P`` and ``P+m-1 <= k*L+L``
(one k, or two when m = 1 and P is a shared token); a sequence cut by a sample boundary is in
no sample. ``samples`` counts the trained samples of the step range holding q at least once,
``occurrences`` every (sample, position). Work goes in units of at most ``UNIT`` index
positions: a unit costs one chunked pass over ``doc_idx`` (the copies' stream positions) and
one over ``shuffle_idx`` up to the range's end (:func:`.lookups.where_in`), so memory is
bounded by the unit, not by the corpus, and a batch of rare queries shares its passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from pileprep.core.errors import ConfigError
from pileprep.formats import indexed
from pileprep.formats.suffix import SuffixIndex
from pileprep.training.lookups import where_in
from pileprep.training.order import TrainingOrder
from pileprep.training.pieces import Pieces

UNIT = 1 << 20  # index positions per unit of work (bounds every temporary array)
_CHUNK = 1 << 22  # doc_idx entries per chunk of the copies pass


@dataclass
class Counts:
    """Counts of Q queries over ``bins`` step ranges ``edges[b] .. edges[b+1]-1``."""

    queries: list[list[int]]
    edges: list[int]
    corpus: np.ndarray  # (Q,) occurrences inside documents of the dataset
    samples: np.ndarray  # (Q, bins) trained samples of the bin holding the sequence
    occurrences: np.ndarray  # (Q, bins) occurrences inside trained samples of the bin

    def cumulative(self, name: str) -> np.ndarray:
        """``samples`` or ``occurrences`` summed from the first bin: a term-frequency curve.
        (Cumulative samples are exact: a sample is trained at one step only.)"""
        return np.cumsum(getattr(self, name), axis=1)


def bin_edges(first: int, end: int, bins: int) -> list[int]:
    """``bins`` step ranges covering ``first .. end-1`` as evenly as whole steps allow (fewer
    when there are fewer steps)."""
    if bins < 1:
        raise ConfigError("--bins must be positive")
    bins = min(bins, end - first)
    return [first + (end - first) * i // bins for i in range(bins + 1)]


@dataclass
class _Unit:
    """Index hits of several queries: query, document, offset in it, and j (0: the whole
    sequence inside the document; j > 0: the document ends with the first j tokens)."""

    query: list = field(default_factory=list)
    doc: list = field(default_factory=list)
    offset: list = field(default_factory=list)
    j: list = field(default_factory=list)
    size: int = 0

    def add(self, q: int, doc: np.ndarray, offset: np.ndarray, j: int) -> None:
        self.query.append(np.full(len(doc), q, np.int64))
        self.doc.append(doc)
        self.offset.append(offset)
        self.j.append(np.full(len(doc), j, np.int64))
        self.size += len(doc)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(np.concatenate(v) if v else np.zeros(0, np.int64)
                     for v in (self.query, self.doc, self.offset, self.j))


class Counter:
    """Counts queries over a step range of one training order, with an index of its dataset."""

    def __init__(self, order: TrainingOrder, index: SuffixIndex, first_step: int, end_step: int,
                 bins: int = 1, unit: int = UNIT):
        order.check_steps(first_step, end_step)
        self.order, self.index, self.unit = order, index, unit
        self.edges = bin_edges(first_step, end_step, bins)
        self._item = order.data.dtype.itemsize

    def count(self, queries: list[list[int]], progress=None) -> Counts:
        Q, bins = len(queries), len(self.edges) - 1
        for q in queries:
            if not q:
                raise ConfigError("a query is empty")
        out = Counts([list(map(int, q)) for q in queries], self.edges, np.zeros(Q, np.int64),
                     np.zeros((Q, bins), np.int64), np.zeros((Q, bins), np.int64))
        span = self.edges[-1] * self.order.cfg.batch_size  # training samples below the range's end
        open_query, seen = -1, np.zeros(0, np.int64)  # a query split over units: its samples
        for unit, going_on in self._units(out):
            q, n = self._trained(queries, *unit.arrays())
            pairs = np.unique(q * span + n)  # each (query, sample) once
            uq, un = pairs // span, pairs % span
            new = ~((uq == open_query) & np.isin(un, seen))  # not counted in an earlier unit
            np.add.at(out.samples, (uq[new], self._bin(un[new])), 1)
            if going_on >= 0:  # its samples so far, for the next unit
                earlier = seen if going_on == open_query else np.zeros(0, np.int64)
                seen = np.union1d(earlier, un[uq == going_on])
            open_query = going_on
            np.add.at(out.occurrences, (q, self._bin(n)), 1)
            if progress is not None:
                progress(unit.size)
        return out

    def _bin(self, n: np.ndarray) -> np.ndarray:
        step = n // self.order.cfg.batch_size
        return np.searchsorted(self.edges, step, side="right") - 1

    # -- index hits, in units ------------------------------------------------------------------

    def _units(self, out: Counts) -> Iterator[tuple[_Unit, int]]:
        """Units of at most ``unit`` hits (one query's hits may fill several), each with the
        query that may go on into the next unit (-1 for none)."""
        unit = _Unit()
        for qi, q in enumerate(out.queries):
            for doc, offset, j in self._hits(q):
                if j == 0:
                    out.corpus[qi] += len(doc)
                unit.add(qi, doc, offset, j)
                if unit.size >= self.unit:
                    yield unit, qi
                    unit = _Unit()
        if unit.size:
            yield unit, -1

    def _hits(self, q: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        m = len(q)
        for pos in self.index.positions(q):
            doc, offset = self._locate(pos)
            inside = offset + m <= np.asarray(self.order.data.sizes[doc], np.int64)
            yield doc[inside], offset[inside], 0
        last = self.index.last_token
        for j in range(1, m):
            if last is not None and q[j - 1] != last:
                continue  # no document ends with q[:j]
            for pos in self.index.positions(q[:j]):
                doc, offset = self._locate(pos)
                ends = offset + j == np.asarray(self.order.data.sizes[doc], np.int64)
                yield doc[ends], offset[ends], j

    def _locate(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(document, offset in it) of token positions: a binary search of the ``.idx``
        pointers, which touches a few pages per position."""
        pointers = self.order.data.pointers
        doc = np.searchsorted(pointers, pos * self._item, side="right") - 1
        return doc, pos - np.asarray(pointers[doc], np.int64) // self._item

    # -- from hits to trained samples ----------------------------------------------------------

    def _trained(self, queries, qidx, doc, offset, j) -> tuple[np.ndarray, np.ndarray]:
        """``(query, training sample)`` of every stream occurrence of the unit's hits inside a
        trained sample of the step range."""
        cdoc, cpos, cstart = copies(self.order, np.unique(doc))
        left = np.searchsorted(cdoc, doc, side="left")
        per = np.searchsorted(cdoc, doc, side="right") - left
        hit = np.repeat(np.arange(len(doc)), per)
        copy = left[hit] + np.arange(len(hit)) - np.repeat(np.cumsum(per) - per, per)
        qi, P, jj, pos = qidx[hit], cstart[copy] + offset[hit], j[hit], cpos[copy]
        ok = np.ones(len(hit), bool)
        for t in np.flatnonzero(jj > 0).tolist():  # across a boundary: read what follows
            ok[t] = self._continues(int(pos[t]) + 1, queries[qi[t]][jj[t]:])
        qi, P = qi[ok], P[ok]
        m = np.array([len(q) for q in queries], np.int64)[qi]
        L = self.order.cfg.seq_length
        M = len(self.order.schedule.sample_idx) - 1
        k_hi = np.minimum(P // L, M - 1)
        k_lo = np.maximum(0, -((L - (P + m - 1)) // L))  # ceil((P + m - 1 - L) / L)
        two = k_hi - 1 >= k_lo  # m = 1 on a token two samples share
        k = np.concatenate([k_hi[k_hi >= k_lo], k_hi[two] - 1])
        qk = np.concatenate([qi[k_hi >= k_lo], qi[two]])
        n = self._training_sample(k)
        return qk[n >= 0], n[n >= 0]

    def _continues(self, i: int, rest: list[int]) -> bool:
        """The stream from ``doc_idx[i]``'s first token on starts with ``rest``."""
        doc_idx, sizes = self.order.schedule.doc_idx, self.order.data.sizes
        while rest:
            if i >= len(doc_idx):
                return False
            d = int(doc_idx[i])
            take = min(len(rest), int(sizes[d]))
            got = self.order.tokens_of(Pieces(*(np.array([v], np.int64) for v in (0, d, 0, take, 0))))
            if got.tolist() != rest[:take]:
                return False
            rest, i = rest[take:], i + 1
        return True

    def _training_sample(self, k: np.ndarray) -> np.ndarray:
        """The training sample n of stream samples k, or -1 when not trained in the range."""
        B, (first, end) = self.order.cfg.batch_size, (self.edges[0], self.edges[-1])
        shuffle = self.order.schedule.shuffle_idx
        uk = np.unique(k)
        ns = where_in(shuffle, uk, stop=end * B) if len(uk) else np.zeros(0, np.int64)
        ns = ns[ns >= first * B]
        ks = np.asarray(shuffle[ns] if len(ns) else ns, np.int64)
        by_k = np.argsort(ks)
        ks, ns = ks[by_k], ns[by_k]
        at = np.minimum(np.searchsorted(ks, k), max(len(ks) - 1, 0))
        found = (ks[at] == k) if len(ks) else np.zeros(len(k), bool)
        return np.where(found, ns[at] if len(ns) else -1, -1)


def copies(order: TrainingOrder, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every copy of the (sorted, unique) documents ``docs`` in ``doc_idx``: document, position
    in ``doc_idx`` and the stream position of its first token, sorted by document then position.

    One pass over ``doc_idx`` in chunks, keeping the running token count (the stream position),
    which a membership scan alone (:func:`.lookups.where_in`) does not give.
    """
    found, base = [], 0
    for lo, part in indexed.chunks(order.schedule.doc_idx, _CHUNK):
        part = part.astype(np.int64)
        size = np.asarray(order.data.sizes[part], np.int64)
        ends = np.cumsum(size) + base
        at = np.minimum(np.searchsorted(docs, part), max(len(docs) - 1, 0))
        hit = np.flatnonzero(docs[at] == part) if len(docs) else np.zeros(0, np.int64)
        found.append((part[hit], hit + lo, ends[hit] - size[hit]))
        base = int(ends[-1]) if len(ends) else base
    doc, pos, start = (np.concatenate([f[i] for f in found]) if found else np.zeros(0, np.int64)
                       for i in range(3))
    by = np.lexsort((pos, doc))
    return doc[by], pos[by], start[by]
