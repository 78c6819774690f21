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
``occurrences`` every (sample, position). Hits go in units of at most ``UNIT`` document copies,
so memory is bounded by the unit, not by the corpus. A hit maps to its copies' stream positions
and a stream sample to its training sample through the schedule's stream map
(:mod:`.streammap`, made once per schedule): a few gathers per unit, no pass over ``doc_idx`` or
``shuffle_idx``, so a term with 10^8 occurrences costs what its hits cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from pileprep.core.config import ScheduleConfig
from pileprep.core.errors import ConfigError
from pileprep.formats.indexed import IndexedDataset, JoinedTokens, data_files, map_budget, mapped_bytes
from pileprep.formats.suffix import SuffixIndex
from pileprep.training import schedule_files
from pileprep.training.lookups import doc_and_offset
from pileprep.training.order import TrainingOrder
from pileprep.training.pieces import Pieces, Preshuffled, expand
from pileprep.training.streammap import open_map
from pileprep.training.termscan import TermScanner, copy_runs

UNIT = 1 << 20  # document copies per unit of work (bounds every temporary array)
NONE = np.iinfo(np.int64).max  # no trained sample yet
LOOKUPS_AT_ONCE = 1 << 10  # queries whose index rows are searched together
FEW_HITS = 1 << 10  # a query with at most this many positions is mapped with its batch
SCAN_SAMPLES = 1 << 9  # training samples per block of a streaming pass (~2 MB of tokens)
# The cost model that chooses, per query, between the index's hits and the streaming pass
# (measured in benchmarks/ngram.py on 2 cores, docs/benchmarks.md): one hit mapped to its
# training samples, and one trained token read and scanned, plus per query scanned.
HIT_SECONDS = 1 / 2.3e6
TOKEN_SECONDS = 1 / 150e6
TOKEN_QUERY_SECONDS = 1 / 20e9


@dataclass
class Counts:
    """Counts of Q queries over ``bins`` step ranges ``edges[b] .. edges[b+1]-1``."""

    queries: list[list[int]]
    edges: list[int]
    corpus: np.ndarray  # (Q,) occurrences inside documents of the dataset
    samples: np.ndarray  # (Q, bins) trained samples of the bin holding the sequence
    occurrences: np.ndarray  # (Q, bins) occurrences inside trained samples of the bin
    first: np.ndarray | None = None  # (Q,) the first training sample holding it in the range, or -1
    strategy: list[str] | None = None  # per query: "index" (its hits) or "stream" (the pass)
    pass_cpu_seconds: float = 0.0  # CPU time of the streaming pass's tasks (rates per core)

    def first_step(self, batch_size: int) -> np.ndarray:
        """The step of each query's first trained sample in the range, or -1."""
        return np.where(self.first >= 0, self.first // batch_size, -1)

    def cumulative(self, name: str) -> np.ndarray:
        """``samples`` or ``occurrences`` summed from the first bin: a term-frequency curve.
        (Cumulative samples are exact: a sample is trained at one step only.)"""
        return np.cumsum(getattr(self, name), axis=1)


def bin_edges(first: int, end: int, bins: int | list[int]) -> list[int]:
    """``bins`` step ranges covering ``first .. end-1`` as evenly as whole steps allow (fewer
    when there are fewer steps); or ``bins`` as the edges themselves."""
    if isinstance(bins, list):
        return bins
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


def may_end_a_document(q: list[int], last_token: int | None) -> list[int]:
    """The j (1 <= j < len(q)) for which ``q[:j]`` may end a document, so an occurrence of q
    may cross into the next one: every j, unless every document ends with ``last_token``."""
    return [j for j in range(1, len(q)) if last_token is None or q[j - 1] == last_token]


def counter_for(order: TrainingOrder, index: SuffixIndex, first_step: int, end_step: int,
                bins, quiet: bool = True) -> "Counter":
    """The index-hit counter of this order: items of a preshuffled dataset, else the stream."""
    if isinstance(order.schedule, Preshuffled):
        return ItemCounter(order, index, first_step, end_step, bins)
    return Counter(order, index, first_step, end_step, bins, quiet=quiet)


def corpus_counts(order: TrainingOrder, index: SuffixIndex, queries: list[list[int]]) -> np.ndarray:
    """Occurrences of each query inside documents of the dataset. When every document ends with
    EOD and a query holds none before its last token, every occurrence in the token stream is
    inside one document: the index's count. Otherwise its positions are checked."""
    out = index.counts(queries)
    last = index.last_token
    for i, q in enumerate(queries):
        if last is None or last in q[:-1]:
            out[i] = sum(len(doc) for doc, _, _ in Counter._inside_of(order, index, q))
    return out


class Counter:
    """Counts queries over a step range of one training order, with an index of its dataset.
    The schedule's stream map is made on first use (``quiet=False``: with progress)."""

    def __init__(self, order: TrainingOrder, index: SuffixIndex, first_step: int, end_step: int,
                 bins: int = 1, unit: int = UNIT, quiet: bool = True):
        order.require_schedule("counting terms over the training stream")
        order.check_steps(first_step, end_step)
        self.order, self.index = order, index
        self.edges = bin_edges(first_step, end_step, bins)
        self.map = open_map(order, order.out_dir, quiet)
        self.unit = max(1, unit // self.map.epochs)  # hits per unit: each has `epochs` copies
        self._item = order.data.dtype.itemsize

    def count(self, queries: list[list[int]], progress=None) -> Counts:
        Q, bins = len(queries), len(self.edges) - 1
        for q in queries:
            if not q:
                raise ConfigError("a query is empty")
        out = Counts([list(map(int, q)) for q in queries], self.edges, np.zeros(Q, np.int64),
                     np.zeros((Q, bins), np.int64), np.zeros((Q, bins), np.int64),
                     np.full(Q, NONE, np.int64))
        span = self.edges[-1] * self.order.cfg.batch_size  # training samples below the range's end
        open_query, seen = -1, _Seen(span)  # a query split over units: its samples so far
        for unit, going_on in self._units(out):
            q, n = self._trained(queries, *unit.arrays())
            pairs = np.unique(q * span + n)  # each (query, sample) once
            uq, un = pairs // span, pairs % span
            new = ~((uq == open_query) & seen.has(un))  # not counted in an earlier unit
            np.add.at(out.samples, (uq[new], self._bin(un[new])), 1)
            if going_on >= 0:
                if going_on != open_query:
                    seen.clear()
                seen.add(un[uq == going_on])
            open_query = going_on
            np.add.at(out.occurrences, (q, self._bin(n)), 1)
            np.minimum.at(out.first, q, n)
            if progress is not None:
                progress(unit.size, going_on if going_on >= 0 else len(queries))
        out.first[out.first == NONE] = -1
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
            if qi % LOOKUPS_AT_ONCE == 0:  # the next batch's rows: memory bounded by a batch
                self._look_up(out.queries[qi:qi + LOOKUPS_AT_ONCE])
                few = self._few_hits(out.queries, range(qi, min(len(out.queries), qi + LOOKUPS_AT_ONCE)))
            for doc, offset, j in ([(*few[qi], 0)] if qi in few else self._hits(q)):
                if j == 0:
                    out.corpus[qi] += len(doc)
                for a in range(0, len(doc), self.unit):  # a shard's run of hits, cut to size
                    unit.add(qi, doc[a:a + self.unit], offset[a:a + self.unit], j)
                    if unit.size >= self.unit:
                        yield unit, qi
                        unit = _Unit()
        if unit.size:
            yield unit, -1

    def _look_up(self, queries: list[list[int]]) -> None:
        """The index rows of these queries, and of every prefix that may end a document,
        found in one batch (one search of every shard for many queries at once)."""
        last = self.index.last_token
        asked = {tuple(q) for q in queries}
        if not isinstance(self.order.schedule, Preshuffled):
            asked |= {tuple(q[:j]) for q in queries for j in may_end_a_document(q, last)}
        asked = sorted(asked)
        self._rows = dict(zip(asked, self.index.ranges(asked)))

    def _few_hits(self, queries, batch: range) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``{query: (doc, offset)}`` of the batch's queries that have at most ``FEW_HITS``
        positions and cannot cross a document's end (so their hits are all inside): found for
        all of them at once, one gather and one document lookup for the lot (a benchmark's
        n-grams are mostly such; one at a time, each cost ~10 numpy calls)."""
        last, whole_items = self.index.last_token, isinstance(self.order.schedule, Preshuffled)
        which, rows = [], []
        for qi in batch:
            q = queries[qi]
            found = self._rows[tuple(q)]
            if (whole_items or not may_end_a_document(q, last)) and \
                    int((found[:, 2] - found[:, 1]).sum()) <= FEW_HITS:
                which.append(qi)
                rows.append(found)
        if not which:
            return {}
        pos, counts = self.index.positions_of_many(rows)
        length = np.repeat(np.array([len(queries[qi]) for qi in which], np.int64), counts)
        doc, offset = doc_and_offset(self.order.data, pos)
        inside = offset + length <= np.asarray(self.order.data.sizes[doc], np.int64)
        cut = np.cumsum(counts)[:-1]
        return {qi: (d[k], o[k]) for qi, d, o, k in zip(
            which, np.split(doc, cut), np.split(offset, cut), np.split(inside, cut))}

    def _positions(self, q) -> Iterator[np.ndarray]:
        rows = getattr(self, "_rows", {}).get(tuple(q))
        return self.index.positions(q) if rows is None else self.index.positions_in(rows)

    def _inside(self, q: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        return self._inside_of(self.order, self.index, q, self._positions(q))

    @staticmethod
    def _inside_of(order, index, q: list[int], positions=None) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """Hits of the whole sequence inside one document (j = 0)."""
        for pos in (index.positions(q) if positions is None else positions):
            # in suffix order: sorted, every later gather is in file order
            doc, offset = doc_and_offset(order.data, np.sort(pos))
            inside = offset + len(q) <= np.asarray(order.data.sizes[doc], np.int64)
            yield doc[inside], offset[inside], 0

    def _hits(self, q: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        yield from self._inside(q)
        for j in may_end_a_document(q, self.index.last_token):
            for pos in self._positions(q[:j]):
                doc, offset = doc_and_offset(self.order.data, np.sort(pos))
                ends = offset + j == np.asarray(self.order.data.sizes[doc], np.int64)
                yield doc[ends], offset[ends], j

    # -- from hits to trained samples ----------------------------------------------------------

    def _trained(self, queries, qidx, doc, offset, j) -> tuple[np.ndarray, np.ndarray]:
        """``(query, training sample)`` of every stream occurrence of the unit's hits inside a
        trained sample of the step range."""
        E = self.map.epochs
        rec = self.map.copies_of(doc)  # (hits, E): every epoch's copy of the hit's document
        P = (rec["start"] + offset[:, None]).reshape(-1)
        qi, jj = np.repeat(qidx, E), np.repeat(j, E)
        ok = self._continued(queries, qi, jj, rec["entry"].reshape(-1))
        qi, P = qi[ok], P[ok]
        m = np.array([len(q) for q in queries], np.int64)[qi]
        L = self.order.cfg.seq_length
        M = len(self.map.trained)  # stream samples
        k_hi = np.minimum(P // L, M - 1)
        k_lo = np.maximum(0, -((L - (P + m - 1)) // L))  # ceil((P + m - 1 - L) / L)
        two = k_hi - 1 >= k_lo  # m = 1 on a token two samples share
        k = np.concatenate([k_hi[k_hi >= k_lo], k_hi[two] - 1])
        qk = np.concatenate([qi[k_hi >= k_lo], qi[two]])
        n = self._training_sample(k)
        return qk[n >= 0], n[n >= 0]

    def _continued(self, queries, qi, jj, entry) -> np.ndarray:
        """False for copies across a boundary (j > 0) whose stream, after the copy at doc_idx
        ``entry``, does not go on with the rest of the query; True for the others."""
        ok = np.ones(len(qi), bool)
        across = np.flatnonzero(jj > 0)
        if not len(across):
            return ok
        width = int(jj.max()) + 1
        key = qi[across] * width + jj[across]
        for g in np.unique(key).tolist():  # one (query, j) at a time: one `rest` to compare
            sel = across[key == g]
            ok[sel] = self._starts_with(entry[sel] + 1, queries[g // width][g % width:])
        return ok

    def _starts_with(self, entries: np.ndarray, rest: list[int]) -> np.ndarray:
        """Whether the stream from each ``doc_idx[entries]``'s first token on starts with
        ``rest``: the next document's first tokens compared at once, a walk over several
        documents only when the next one is shorter than ``rest``."""
        doc_idx, sizes = self.order.schedule.doc_idx, self.order.data.sizes
        out = np.zeros(len(entries), bool)
        where = np.flatnonzero(entries < len(doc_idx))  # the stream's last copy: nothing follows
        nxt = np.asarray(doc_idx[entries[where]] if len(where) else where, np.int64)
        long = np.asarray(sizes[nxt], np.int64) >= len(rest)
        out[where[long]] = (self._heads(nxt[long], len(rest)) == np.asarray(rest)).all(axis=1)
        for t in where[~long].tolist():
            out[t] = self._continues(int(entries[t]), rest)
        return out

    def _heads(self, docs: np.ndarray, length: int) -> np.ndarray:
        """The first ``length`` tokens of each document, ``(len(docs), length)``."""
        tokens = self.order.data.tokens
        if isinstance(tokens, np.ndarray):  # one .bin: a gather
            first = np.asarray(self.order.data.pointers[docs], np.int64) // self._item
            return np.asarray(tokens[first[:, None] + np.arange(length)]).reshape(len(docs), length)
        zero = np.zeros(len(docs), np.int64)  # a .bin in pieces: read piece by piece
        got = self.order.tokens_of(Pieces(zero, docs, zero, np.full(len(docs), length), zero))
        return got.reshape(len(docs), length)

    def _continues(self, i: int, rest: list[int]) -> bool:
        """The stream from ``doc_idx[i]``'s first token on starts with ``rest``."""
        doc_idx, sizes = self.order.schedule.doc_idx, self.order.data.sizes
        while rest:
            if i >= len(doc_idx):
                return False
            d = int(doc_idx[i])
            take = min(len(rest), int(sizes[d]))
            if self._heads(np.array([d]), take)[0].tolist() != rest[:take]:
                return False
            rest, i = rest[take:], i + 1
        return True

    def _training_sample(self, k: np.ndarray) -> np.ndarray:
        """The training sample n of stream samples k, or -1 when not trained in the range."""
        B = self.order.cfg.batch_size
        n = self.map.trained_at(k)
        return np.where((n >= self.edges[0] * B) & (n < self.edges[-1] * B), n, -1)


class _Seen:
    """A set of training samples below ``span`` as a bitmap (span/8 bytes: 18 MB for Pythia's
    147 M samples), for a query whose hits fill several units: testing a unit's samples costs
    the unit, not the samples gathered so far."""

    def __init__(self, span: int):
        self.span, self.bits = span, None

    def has(self, n: np.ndarray) -> np.ndarray:
        if self.bits is None:
            return np.zeros(len(n), bool)
        return ((self.bits[n >> 3] >> (n & 7).astype(np.uint8)) & 1).astype(bool)

    def add(self, n: np.ndarray) -> None:
        if self.bits is None:
            self.bits = np.zeros((self.span + 7) // 8, np.uint8)
        np.bitwise_or.at(self.bits, n >> 3, (1 << (n & 7)).astype(np.uint8))

    def clear(self) -> None:
        if self.bits is not None:
            self.bits[:] = 0


class ItemCounter(Counter):
    """Counts over a preshuffled dataset: its items are the trained samples, each whole, so an
    occurrence inside item n is one in training sample n, and no occurrence crosses two items
    (they were never side by side in one sample). No stream map is needed."""

    def __init__(self, order: TrainingOrder, index: SuffixIndex, first_step: int, end_step: int,
                 bins: int = 1, unit: int = UNIT):
        order.check_steps(first_step, end_step)
        self.order, self.index = order, index
        self.edges = bin_edges(first_step, end_step, bins)
        self.unit = unit
        self._item = order.data.dtype.itemsize

    def _hits(self, q: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        return self._inside(q)  # no sequence crosses two items

    def _trained(self, queries, qidx, doc, offset, j) -> tuple[np.ndarray, np.ndarray]:
        B = self.order.cfg.batch_size
        ok = (doc >= self.edges[0] * B) & (doc < self.edges[-1] * B)
        return qidx[ok], doc[ok]


# -- the streaming pass ------------------------------------------------------------------------

def hit_costs(order: TrainingOrder, index: SuffixIndex, queries: list[list[int]]) -> np.ndarray:
    """Per query, the index hits the counter would map: its occurrences inside documents and,
    for every j where its first j tokens may end a document, those of ``q[:j]``; each once per
    epoch (a preshuffled dataset's items: once)."""
    asked, owner = [], []
    for i, q in enumerate(queries):
        asked.append(q)
        owner.append(i)
        if not isinstance(order.schedule, Preshuffled):
            for j in may_end_a_document(q, index.last_token):
                asked.append(q[:j])
                owner.append(i)
    hits = np.bincount(np.array(owner, np.int64), weights=index.counts(asked), minlength=len(queries))
    return hits * order.schedule.epochs


def choose_stream(hits: np.ndarray, trained_tokens: int, workers: int) -> np.ndarray:
    """Which queries the streaming pass should count (True) rather than the index's hits: a
    query goes to the pass when its hits cost more than what it adds to the pass, and the pass
    runs only when it saves time over mapping every hit."""
    cost = hits * HIT_SECONDS
    stream = cost > trained_tokens * TOKEN_QUERY_SECONDS / workers
    if not stream.any():
        return stream
    with_pass = (trained_tokens * (TOKEN_SECONDS + stream.sum() * TOKEN_QUERY_SECONDS) / workers
                 + cost[~stream].sum())
    return stream if with_pass < cost.sum() else np.zeros_like(stream)


def scan_range(out_dir: str, cfg: ScheduleConfig, queries: list[list[int]], lo: int, hi: int,
               edges: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(occurrences, samples)`` (queries x bins) of every query in training samples
    ``lo .. hi-1`` of the order ``out_dir`` / ``cfg``, and the first sample holding each (or
    -1), reading each sample's tokens once, in training order (the work of one task of the
    pass)."""
    order = TrainingOrder(out_dir, cfg)
    B = order.cfg.batch_size
    bins = len(edges) - 1
    occ = np.zeros((len(queries), bins), np.int64)
    held = np.zeros_like(occ)
    first = np.full(len(queries), -1, np.int64)
    scanner = TermScanner(queries, order.data.dtype)
    cuts = sorted({lo, hi, *(e * B for e in edges if lo < e * B < hi)})
    reader, budget = _SampleReader(order), map_budget()
    for a, z in zip(cuts[:-1], cuts[1:]):  # within a bin
        b = int(np.searchsorted(edges, a // B, side="right")) - 1
        for d in range(a, z, SCAN_SAMPLES):
            if mapped_bytes() > budget:  # let go of the pages the maps hold; new maps
                reader = _SampleReader(order)
            o, h, f = scanner.scan(reader.rows(d, min(z, d + SCAN_SAMPLES)))
            occ[:, b] += o
            held[:, b] += h
            new = (first < 0) & (f >= 0)  # blocks go in training order: the first stays
            first[new] = d + f[new]
    return occ, held, first


class _SampleReader:
    """Training samples' tokens as rows, through memory maps of the ``.bin`` and the schedule
    (a pass reads them all: maps beat a pread per piece, and pages mapped once cost no fault
    when read again; the pass makes new ones past ``map_budget``)."""

    def __init__(self, order: TrainingOrder):
        self.L1 = order.cfg.seq_length + 1
        data = IndexedDataset(order.prefix)
        self.item = data.dtype.itemsize
        self.sizes, self.pointers = data.sizes, data.pointers
        files = data_files(order.prefix)
        self.tokens = data.tokens if len(files) == 1 else JoinedTokens(files, data.dtype)
        self.schedule = (order.schedule if isinstance(order.schedule, Preshuffled)
                         else schedule_files.load(order.prefix, order.cfg, data.sizes))

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Samples ``lo .. hi-1``, (hi - lo, L+1)."""
        if isinstance(self.schedule, Preshuffled):  # items back to back: one slice
            a = int(self.pointers[lo]) // self.item
            return np.asarray(self.tokens[a:a + (hi - lo) * self.L1]).reshape(hi - lo, self.L1)
        p = expand(self.schedule, self.sizes, np.arange(lo, hi))
        first = np.asarray(self.pointers[p.doc], np.int64) // self.item + p.offset
        if isinstance(self.tokens, np.ndarray):
            return copy_runs(self.tokens, first, p.tokens).reshape(hi - lo, self.L1)
        before = np.cumsum(p.tokens) - p.tokens  # where each piece starts in the block
        at = np.repeat(first - before, p.tokens) + np.arange(int(p.tokens.sum()))
        return self.tokens.take(at).reshape(hi - lo, self.L1)
