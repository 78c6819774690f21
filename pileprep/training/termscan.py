"""Counting many token sequences in rows of tokens at once: the core of a streaming count.

A frequent term (``" the"``: ~10^10 occurrences in the Pile) costs more to count hit by hit
from the index than to read every trained token once: :class:`TermScanner` takes blocks of
training samples (rows of L+1 tokens, as the trainer reads them) and counts, for every query,
its occurrences in the block and the rows holding it at least once. An occurrence is a window of
a row equal to the query, so occurrences across a document boundary inside a sample count, and a
query cut by the sample's end does not: the definition of :mod:`.ngram`, with nothing to map.

One compiled pass (numba) reads each token once. A token that begins no query costs one table
lookup. Otherwise the window's key grows a token at a time through the query lengths that token
begins: packed exactly while the tokens fit in 64 bits, a polynomial hash after that (a hashed
match is confirmed token by token), and each length's key is looked up in an open-addressing
table of that length's queries. Rows holding a query are counted by remembering, per query, the
last row that held it (and the first). Pure computation, no I/O: :mod:`.ngram` feeds it.
"""

from __future__ import annotations

import numba
import numpy as np

_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd: a hash is a polynomial in it, a slot its top bits


class TermScanner:
    """Counts of ``queries`` (token id lists, repeats allowed) in blocks of rows of ``dtype``."""

    def __init__(self, queries: list[list[int]], dtype):
        self.queries = [tuple(int(t) for t in q) for q in queries]
        if any(not q for q in self.queries):
            raise ValueError("a query is empty")
        bits = 8 * np.dtype(dtype).itemsize
        top = (1 << bits) - 1  # ids above the dtype's range occur nowhere: not looked up
        self.distinct = sorted({q for q in self.queries if min(q) >= 0 and max(q) <= top})
        where = {q: i for i, q in enumerate(self.distinct)}
        self.back = np.array([where.get(q, -1) for q in self.queries], np.int64)
        self.lengths = np.array(sorted({len(q) for q in self.distinct}), np.int64)
        M = int(self.lengths.max()) if len(self.lengths) else 1
        self.bits = bits
        self.ids = np.zeros((len(self.distinct), M), np.int64)
        for i, q in enumerate(self.distinct):
            self.ids[i, :len(q)] = q
        # starts[t]: bit g set when token t begins a query of length lengths[g]
        self.starts = np.zeros(top + 1, np.uint64)
        slots = 1 << max(4, (4 * len(self.distinct)).bit_length())  # load factor <= 1/4
        self.slot_shift = np.uint64(64 - (slots.bit_length() - 1))
        self.table_key = np.zeros((max(1, len(self.lengths)), slots), np.uint64)
        self.table_q = np.full((max(1, len(self.lengths)), slots), -1, np.int64)
        for i, q in enumerate(self.distinct):
            g = int(np.searchsorted(self.lengths, len(q)))
            self.starts[q[0]] |= np.uint64(1) << np.uint64(g)
            _insert(self.table_key[g], self.table_q[g], _key(q, bits), i, self.slot_shift)

    def scan(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(occurrences, rows holding it, first row holding it or -1)`` per query in
        ``rows`` (R, W)."""
        D = len(self.distinct)
        occ, held = np.zeros(D + 1, np.int64), np.zeros(D + 1, np.int64)  # [D]: queries of no row
        first = np.full(D + 1, -1, np.int64)
        if D:
            _scan(np.ascontiguousarray(rows), self.lengths, self.starts, self.table_key,
                  self.table_q, self.slot_shift, self.ids, self.bits, occ, held, first)
        return occ[self.back], held[self.back], first[self.back]


def _key(q: tuple[int, ...], bits: int) -> np.uint64:
    """The key the compiled pass makes for a window equal to ``q`` (see :func:`_scan`)."""
    key = 0
    for j, t in enumerate(q):
        if (j + 1) * bits <= 64:
            key = (key << bits) | t
        else:
            key = (key * int(_MULT) + t) & ((1 << 64) - 1)
    return np.uint64(key)


def _insert(keys: np.ndarray, which: np.ndarray, key: np.uint64, q: int, shift: np.uint64) -> None:
    mask = len(keys) - 1
    s = ((int(key) * int(_MULT)) & ((1 << 64) - 1)) >> int(shift)
    while which[s] >= 0:  # equal keys (a hash collision) each get a slot: all are confirmed
        s = (s + 1) & mask
    keys[s], which[s] = key, q


@numba.njit(cache=True, nogil=True)
def _scan(rows, lengths, starts, table_key, table_q, shift, ids, bits, occ, held, first):
    R, W = rows.shape
    last = first.copy()  # the last row that held each query
    G = len(lengths)
    mask = table_key.shape[1] - 1
    width = np.uint64(bits)
    for r in range(R):
        for c in range(W):
            begins = starts[rows[r, c]]
            if begins == 0:
                continue
            key = np.uint64(0)
            m = 0
            for g in range(G):
                want = lengths[g]
                if c + want > W:
                    break
                while m < want:  # the key of tokens c .. c+want-1, grown from the last length's
                    t = np.uint64(rows[r, c + m])
                    m += 1
                    if m * bits <= 64:
                        key = (key << width) | t
                    else:
                        key = key * _MULT + t
                if (begins >> np.uint64(g)) & np.uint64(1) == 0:
                    continue
                s = np.int64((key * _MULT) >> shift)
                while table_q[g, s] >= 0:
                    if table_key[g, s] == key:
                        q = table_q[g, s]
                        same = True
                        if want * bits > 64:  # a hash: confirm every token
                            for j in range(want):
                                if rows[r, c + j] != ids[q, j]:
                                    same = False
                                    break
                        if same:
                            occ[q] += 1
                            if last[q] != r:
                                if last[q] < 0:
                                    first[q] = r
                                last[q] = r
                                held[q] += 1
                            break
                    s = (s + 1) & mask


@numba.njit(cache=True, nogil=True)
def _copy_runs(tokens, starts, lengths, out):
    at = 0
    for i in range(len(starts)):
        a = starts[i]
        for j in range(lengths[i]):
            out[at + j] = tokens[a + j]
        at += lengths[i]


def copy_runs(tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The runs ``tokens[s:s+n]`` back to back (a block of samples from their document pieces):
    one compiled loop, no index array per token."""
    out = np.empty(int(lengths.sum()), tokens.dtype)
    _copy_runs(tokens, np.asarray(starts, np.int64), np.asarray(lengths, np.int64), out)
    return out
