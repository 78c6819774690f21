"""A memo of pre-token -> token ids that compiled code can search: the fast engine's hot path.

Text repeats its words (Zipf), so BPE, the costly step, is needed once per distinct pre-token.
The memo is an open-addressing hash table in numpy arrays: compiled code (:func:`find_or_add`)
looks a pre-token's code points up and, when absent, appends it as a *pending* entry; the
pending entries' ids are then computed by the compiled BPE of :mod:`.bpe` (:meth:`resolve`).
Entries are numbered in insertion order, so both the code points and the ids of all entries
live in two flat arrays addressed by prefix offsets.

The memo only changes speed, never ids: it is pruned to its most used words when it outgrows
its limits (between batches), and an entry is trusted only after its code points compare
equal, not on its hash.
"""

from __future__ import annotations

import itertools

import numba
import numpy as np

from pileprep.tokenizer import bpe

# state[] slots: entries, entries with ids, code points of a word that did not fit.
_ENTRIES, _RESOLVED, _WANTED = 0, 1, 2
# A slot's second word: entry + 1 in the low 32 bits, hits in the high 32.
_ENTRY_MASK = np.uint64(0xFFFFFFFF)
_HIT = np.uint64(1 << 32)
_HITS_CAP = np.uint64(0xFFFF0000 << 32)
_HOT_AFTER = np.uint64(8 << 32)


@numba.njit(cache=True, nogil=True, inline="always")
def word_hash(cps, a, b):
    h = np.uint64(0xCBF29CE484222325)
    for k in range(a, b):
        h = (h ^ np.uint64(cps[k])) * np.uint64(0x100000001B3)
    h ^= h >> np.uint64(32)
    return h * np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, nogil=True, inline="always")
def _same(cps, a, n, cp_off, cp_arena, e):
    """Whether entry ``e`` holds exactly the ``n`` code points ``cps[a:a + n]``."""
    base = cp_off[e]
    if cp_off[e + 1] - base != n:
        return False
    for k in range(n):
        if cp_arena[base + k] != cps[a + k]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def find_or_add(cps, a, b, hot, slots, cp_off, cp_arena, state):
    """Entry number of the word ``cps[a:b]``, appended (pending) if new; -1 (and the word's
    length in ``state``) if it is new and the memo has no room: call :meth:`WordCache.grow`.

    ``hot`` is a small direct-mapped table ``(hash, entry + 1)`` of words used often (at least
    ``_HOT_AFTER`` hits), looked at first: it fits in the processor's fastest cache, where
    most words of any text are found. A slot of the main table is a row
    ``(hash, entry + 1 + hits * 2^32)``, 0 meaning empty: hash, entry and the entry's hit count
    (which words to keep, see :meth:`WordCache.start_batch`) share a cache line.
    """
    n = b - a
    h = word_hash(cps, a, b)
    at = np.int64(h) & (len(hot) - 1)
    if hot[at, 0] == h and hot[at, 1] != 0:
        e = np.int64(hot[at, 1]) - 1
        if _same(cps, a, n, cp_off, cp_arena, e):
            return e
    e = state[_ENTRIES]
    if e + 2 > len(cp_off) or cp_off[e] + n > len(cp_arena) or 2 * (e + 1) > len(slots):
        state[_WANTED] = n
        return -1
    mask = len(slots) - 1
    slot = np.int64(h >> np.uint64(16)) & mask
    while True:
        stored = slots[slot, 1]
        if stored == 0:
            break
        if slots[slot, 0] == h:
            e = np.int64(stored & _ENTRY_MASK) - 1
            if _same(cps, a, n, cp_off, cp_arena, e):
                if stored < _HITS_CAP:
                    slots[slot, 1] = stored + _HIT
                if stored >= _HOT_AFTER:
                    hot[at, 0] = h
                    hot[at, 1] = e + 1
                return e
        slot = (slot + 1) & mask
    e = state[_ENTRIES]
    base = cp_off[e]
    for k in range(n):
        cp_arena[base + k] = cps[a + k]
    cp_off[e + 1] = base + n
    slots[slot, 0] = h
    slots[slot, 1] = e + 1
    state[_ENTRIES] = e + 1
    return e


@numba.njit(cache=True, nogil=True, inline="always")
def _place(slots, h, value):
    """Put a row ``(h, value)`` in the first free slot of ``h``'s probe sequence."""
    mask = len(slots) - 1
    slot = np.int64(h >> np.uint64(16)) & mask
    while slots[slot, 1] != 0:
        slot = (slot + 1) & mask
    slots[slot, 0] = h
    slots[slot, 1] = value


@numba.njit(cache=True, nogil=True)
def _rehash(old, new):
    for row in range(len(old)):
        if old[row, 1] != 0:
            _place(new, old[row, 0], old[row, 1])


@numba.njit(cache=True, nogil=True)
def _hits(slots, entries):
    """Hit count of each entry."""
    out = np.zeros(entries, np.int64)
    for row in range(len(slots)):
        stored = slots[row, 1]
        if stored != 0:
            out[np.int64(stored & _ENTRY_MASK) - 1] = np.int64(stored >> np.uint64(32))
    return out


@numba.njit(cache=True, nogil=True)
def _compact(keep, slots, cp_off, cp_arena, id_off, id_arena, new_slots, new_cp_off,
             new_cp_arena, new_id_off, new_id_arena):
    """Copy the entries ``keep`` (ascending) into the new arrays, renumbered 0.. in that
    order, with their hits halved (old fame fades); returns nothing, fills the new arrays."""
    new_index = np.full(len(cp_off), -1, np.int64)
    for i in range(len(keep)):
        e = keep[i]
        new_index[e] = i
        a, b = cp_off[e], cp_off[e + 1]
        c = new_cp_off[i]
        new_cp_arena[c:c + b - a] = cp_arena[a:b]
        new_cp_off[i + 1] = c + b - a
        a, b = id_off[e], id_off[e + 1]
        c = new_id_off[i]
        new_id_arena[c:c + b - a] = id_arena[a:b]
        new_id_off[i + 1] = c + b - a
    for row in range(len(slots)):
        stored = slots[row, 1]
        if stored == 0:
            continue
        i = new_index[np.int64(stored & _ENTRY_MASK) - 1]
        if i >= 0:
            _place(new_slots, slots[row, 0],
                   np.uint64(i + 1) | ((stored >> np.uint64(33)) << np.uint64(32)))


def _resized(arr: np.ndarray, size: int) -> np.ndarray:
    out = np.empty(size, arr.dtype)
    out[:len(arr)] = arr
    return out


class WordCache:
    """The memo's arrays, their growth and the reset policy (see the module docstring).

    The memo is kept small: with BPE compiled, a dropped word is cheap to redo, and memos of
    2^16 to 2^22 words measured the same speed on real text (docs/tokenizer.md). When it
    outgrows ``max_entries`` or ``max_code_points`` it keeps its ``keep`` most used words (by
    hits counted in the main table, halved at each pruning; a word found in the hot table is
    not counted again, but it reached it with 8 hits) and drops the rest; Zipf's law makes
    those few words most of the text.
    """

    def __init__(self, max_entries: int = 1 << 18, max_code_points: int = 1 << 21,
                 keep: int = 1 << 14, hot: int = 1 << 12):
        self.max_entries, self.max_code_points, self.keep = max_entries, max_code_points, keep
        self.hot_size = hot
        self.clears = 0
        self._empty()

    def _empty(self) -> None:
        self.hot = np.zeros((self.hot_size, 2), np.uint64)  # entry numbers change: start cold
        self.slots = np.zeros((1 << 16, 2), np.uint64)
        self.cp_off = np.zeros((1 << 15) + 1, np.int64)
        self.cp_arena = np.zeros(1 << 18, np.uint32)
        self.id_off = np.zeros((1 << 15) + 1, np.int64)
        self.id_arena = np.zeros(1 << 17, np.uint32)
        self.state = np.zeros(3, np.int64)

    @property
    def entries(self) -> int:
        return int(self.state[_ENTRIES])

    def start_batch(self) -> None:
        """Prune the memo to its most used words if it has outgrown its limits (only between
        batches: a batch's pending work refers to entry numbers)."""
        if self.entries > self.max_entries or self.cp_off[self.entries] > self.max_code_points:
            self.clears += 1
            self._prune()

    def _prune(self) -> None:
        old = (self.slots, self.cp_off, self.cp_arena, self.id_off, self.id_arena)
        hits = _hits(self.slots, self.entries)
        keep = np.arange(self.entries)
        if self.keep < self.entries:
            # The `keep` largest counts, in entry order (ties at the cut go to older words).
            order = np.argsort(-hits, kind="stable")[:self.keep]
            keep = np.sort(order)
        self._empty()
        self._reserve(max(len(keep), 1), int(np.diff(old[1])[keep].sum()))
        ids_needed = int(np.diff(old[3])[keep].sum())
        if ids_needed > len(self.id_arena):
            self.id_arena = _resized(self.id_arena, ids_needed)
        _compact(keep, *old, self.slots, self.cp_off, self.cp_arena, self.id_off, self.id_arena)
        self.state[_ENTRIES] = self.state[_RESOLVED] = len(keep)

    def grow(self) -> None:
        """Double the room (and fit the word :func:`find_or_add` could not place)."""
        self._reserve(self.entries + 1, int(self.cp_off[self.entries]) + int(self.state[_WANTED]))

    def _reserve(self, need: int, fill: int) -> None:
        if need + 1 > len(self.cp_off):  # offsets: one more than the entries
            size = max(need, 2 * (len(self.cp_off) - 1)) + 1
            self.cp_off = _resized(self.cp_off, size)
            self.id_off = _resized(self.id_off, size)
        if fill > len(self.cp_arena):
            self.cp_arena = _resized(self.cp_arena, max(fill, 2 * len(self.cp_arena)))
        if 2 * need > len(self.slots):
            size = len(self.slots)
            while 2 * need > size:
                size *= 2
            old, self.slots = self.slots, np.zeros((size, 2), np.uint64)
            _rehash(old, self.slots)

    def pending(self) -> tuple[int, int]:
        return int(self.state[_RESOLVED]), self.entries

    def resolve(self, table: bpe.MergeTable, long_words) -> int:
        """Compute the ids of the pending entries with the compiled BPE of ``table``, and
        ``long_words(words) -> list of id lists`` for words of :data:`bpe.LONG_WORD` code
        points or more; returns how many entries there were."""
        first, last = self.pending()
        if first == last:
            return 0
        offsets = self.cp_off[first:last + 1]
        given, given_off, given_ids = self._long_words(offsets, long_words)
        need = int(self.id_off[first]) + 4 * int(offsets[-1] - offsets[0])
        if need > len(self.id_arena):
            self.id_arena = _resized(self.id_arena, max(need, 2 * len(self.id_arena)))
        bpe.encode_words(self.cp_arena, offsets, table.byte_ids, table.vocab_size, table.keys,
                         table.ranks, table.merged, given, given_off, given_ids,
                         self.id_off[first:last + 1], self.id_arena)
        self.state[_RESOLVED] = last
        return last - first

    def _long_words(self, offsets: np.ndarray, long_words):
        """``(given, given_off, given_ids)`` for :func:`bpe.encode_words`: the ids of the
        pending words too long for the compiled merge loop, from ``long_words``."""
        lengths = np.diff(offsets)
        long = np.flatnonzero(lengths >= bpe.LONG_WORD)
        given = np.full(len(lengths), -1, np.int64)
        if not len(long):
            return given, np.zeros(1, np.int64), np.zeros(0, np.int64)
        words = [self.cp_arena[offsets[w]:offsets[w + 1]].tobytes().decode("utf-32-le")
                 for w in long.tolist()]
        ids = long_words(words)
        given[long] = np.arange(len(long))
        given_off = np.zeros(len(long) + 1, np.int64)
        given_off[1:] = np.cumsum([len(x) for x in ids])
        flat = np.fromiter(itertools.chain.from_iterable(ids), np.int64, int(given_off[-1]))
        return given, given_off, flat
