"""Counting many token sequences in rows of tokens at once: the core of a streaming count.

A frequent term (``" the"``: ~10^10 occurrences in the Pile) costs more to count hit by hit
from the index than to read every trained token once: :class:`TermScanner` takes blocks of
training samples (rows of L+1 tokens, as the trainer reads them) and counts, for every query,
its occurrences in the block and the rows holding it at least once. An occurrence is a window of
a row equal to the query, so occurrences across a document boundary inside a sample count, and a
query cut by the sample's end does not: the definition of :mod:`.ngram`, with nothing to map.

One compiled pass (numba) reads each token once (a handful of single tokens are compared with
numpy's vector compares instead, one pass each). A token that begins no query costs one table
lookup. Otherwise the window grows a token at a time while it is still a prefix of some query:
its key is packed exactly while the tokens fit in 64 bits, a polynomial hash after that (a
hashed match is confirmed token by token), and each length's key is looked up in an
open-addressing table of every query prefix of that length (marked with the query it is, if
one is that long). Most windows stop at their second token. Rows holding a query are counted by remembering, per query, the
last row that held it (and the first). Pure computation, no I/O: :mod:`.ngram` feeds it.
"""

from __future__ import annotations

import numba
import numpy as np

_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd: a hash is a polynomial in it, a slot its top bits
FEW_TOKENS = 4  # single-token queries counted by vector compares (one pass over the rows each)


class TermScanner:
    """Counts of ``queries`` (token id lists, repeats allowed) in blocks of rows of ``dtype``."""

    def __init__(self, queries: list[list[int]], dtype):
        self.queries = [tuple(int(t) for t in q) for q in queries]
        if any(not q for q in self.queries):
            raise ValueError("a query is empty")
        bits = 8 * np.dtype(dtype).itemsize
        top = int(np.iinfo(dtype).max)  # ids above the dtype's range occur nowhere: not looked up
        self.distinct = sorted({q for q in self.queries if min(q) >= 0 and max(q) <= top})
        where = {q: i for i, q in enumerate(self.distinct)}
        self.back = np.array([where.get(q, -1) for q in self.queries], np.int64)
        self.bits = bits
        M = max((len(q) for q in self.distinct), default=1)
        self.few_tokens = M == 1 and 0 < len(self.distinct) <= FEW_TOKENS
        self.ids = np.zeros((len(self.distinct), M), np.int64)
        for i, q in enumerate(self.distinct):
            self.ids[i, :len(q)] = q
        # The first token's mark, indexed by a row's token (tokens past the table's end begin
        # no query: for wide dtypes it is as long as the largest first token asked).
        self.first = np.full(max((q[0] for q in self.distinct), default=0) + 1, NOTHING, np.int64)
        # Every longer prefix of every query, by length: the query it is (>= 0), or PREFIX. A
        # window stops growing at the first length whose prefix no query has.
        prefixes = [dict() for _ in range(M)]
        for i, q in enumerate(self.distinct):
            for l in range(1, len(q) + 1):
                mark = i if l == len(q) else PREFIX
                if l == 1:
                    if mark >= 0 or self.first[q[0]] == NOTHING:
                        self.first[q[0]] = mark
                else:
                    prefixes[l - 1][q[:l]] = max(mark, prefixes[l - 1].get(q[:l], PREFIX))
        # One flat table: length l's prefixes in slots base[l] .. base[l]+size[l]-1, a power of
        # two at least 4x their number, so memory follows the prefixes, not the longest query.
        self.size = np.array([1 << max(4, (4 * len(p)).bit_length()) if p else 1 for p in prefixes], np.int64)
        self.base = np.concatenate([[0], np.cumsum(self.size)[:-1]]).astype(np.int64)
        self.table_key = np.zeros(int(self.size.sum()), np.uint64)
        self.table_q = np.full(int(self.size.sum()), NOTHING, np.int64)
        for l in range(1, M):
            a, n = int(self.base[l]), int(self.size[l])
            for prefix, mark in prefixes[l].items():
                _insert(self.table_key[a:a + n], self.table_q[a:a + n], _key(prefix, bits), mark)

    def scan(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(occurrences, rows holding it, first row holding it or -1)`` per query in
        ``rows`` (R, W)."""
        D = len(self.distinct)
        occ, held = np.zeros(D + 1, np.int64), np.zeros(D + 1, np.int64)  # [D]: queries of no row
        first = np.full(D + 1, -1, np.int64)
        if self.few_tokens:  # a handful of single tokens: numpy's vector compares beat the loop
            for i, (t,) in enumerate(self.distinct):
                per_row = np.count_nonzero(rows == t, axis=1)
                hit = np.flatnonzero(per_row)
                occ[i], held[i], first[i] = per_row.sum(), len(hit), hit[0] if len(hit) else -1
        elif D:
            _scan(np.ascontiguousarray(rows), self.first, self.base, self.size, self.table_key,
                  self.table_q, self.ids, self.bits, occ, held, first)
        return occ[self.back], held[self.back], first[self.back]


NOTHING, PREFIX = -1, -2  # a table entry: empty, or only a prefix of longer queries


def _key(q: tuple[int, ...], bits: int) -> np.uint64:
    """The key the compiled pass makes for a window equal to ``q`` (see :func:`_scan`)."""
    key = 0
    for j, t in enumerate(q):
        if (j + 1) * bits <= 64:
            key = (key << bits) | t
        else:
            key = (key * int(_MULT) + t) & ((1 << 64) - 1)
    return np.uint64(key)


def _insert(keys: np.ndarray, which: np.ndarray, key: np.uint64, q: int) -> None:
    mask = len(keys) - 1
    s = (((int(key) * int(_MULT)) & ((1 << 64) - 1)) >> 32) & mask
    while which[s] != NOTHING:  # equal hashed keys each get a slot: all are confirmed
        s = (s + 1) & mask
    keys[s], which[s] = key, q


@numba.njit(cache=True, nogil=True)
def _count(q, r, occ, held, first, last):
    occ[q] += 1
    if last[q] != r:
        if last[q] < 0:
            first[q] = r
        last[q] = r
        held[q] += 1


@numba.njit(cache=True, nogil=True)
def _scan(rows, first_of, base, size, table_key, table_q, ids, bits, occ, held, first):
    R, W = rows.shape
    M = len(base)
    width = np.uint64(bits)
    last = first.copy()  # the last row that held each query
    for r in range(R):
        for c in range(W):
            t = rows[r, c]
            if t < 0 or t >= len(first_of):
                continue
            mark = first_of[t]
            if mark == -1:
                continue
            if mark >= 0:
                _count(mark, r, occ, held, first, last)
            key = np.uint64(t)
            for l in range(1, min(M, W - c)):  # windows of l+1 tokens while a prefix matches
                t = np.uint64(rows[r, c + l])
                key = (key << width) | t if (l + 1) * bits <= 64 else key * _MULT + t
                mask = size[l] - 1
                s = np.int64((key * _MULT) >> np.uint64(32)) & mask
                found = False
                while table_q[base[l] + s] != -1:
                    if table_key[base[l] + s] == key:
                        q = table_q[base[l] + s]
                        if q >= 0 and (l + 1) * bits > 64:  # a hash: confirm every token
                            for j in range(l + 1):
                                if rows[r, c + j] != ids[q, j]:
                                    q = -2
                                    break
                        found = True
                        if q >= 0:
                            _count(q, r, occ, held, first, last)
                            break
                    s = (s + 1) & mask
                if not found:
                    break


@numba.njit(cache=True, nogil=True)
def _copy_runs(tokens, starts, lengths, out):
    at = 0
    for i in range(len(starts)):
        n = lengths[i]
        out[at:at + n] = tokens[starts[i]:starts[i] + n]
        at += n


def copy_runs(tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The runs ``tokens[s:s+n]`` back to back (a block of samples from their document pieces):
    one compiled loop, no index array per token."""
    out = np.empty(int(lengths.sum()), tokens.dtype)
    _copy_runs(tokens, np.asarray(starts, np.int64), np.asarray(lengths, np.int64), out)
    return out
