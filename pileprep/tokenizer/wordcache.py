"""A memo of pre-token -> token ids that compiled code can search: the fast engine's hot path.

Text repeats its words (Zipf), so BPE, the costly step, is needed once per distinct pre-token.
The memo is an open-addressing hash table in numpy arrays: compiled code (:func:`find_or_add`)
looks a pre-token's code points up and, when absent, appends it as a *pending* entry; Python
then computes the pending entries' ids with the reference's own BPE model (:meth:`resolve`).
Entries are numbered in insertion order, so both the code points and the ids of all entries
live in two flat arrays addressed by prefix offsets.

The memo only changes speed, never ids: it is cleared when it outgrows its limits (between
batches), and an entry is trusted only after its code points compare equal, not on its hash.
"""

from __future__ import annotations

import itertools

import numba
import numpy as np

# state[] slots: entries, entries with ids, code points of a word that did not fit.
_ENTRIES, _RESOLVED, _WANTED = 0, 1, 2


@numba.njit(cache=True, nogil=True, inline="always")
def word_hash(cps, a, b):
    h = np.uint64(0xCBF29CE484222325)
    for k in range(a, b):
        h = (h ^ np.uint64(cps[k])) * np.uint64(0x100000001B3)
    h ^= h >> np.uint64(32)
    return h * np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, nogil=True)
def find_or_add(cps, a, b, slots, cp_off, cp_arena, state):
    """Entry number of the word ``cps[a:b]``, appended (pending) if new; -1 (and the word's
    length in ``state``) if it is new and the memo has no room: call :meth:`WordCache.grow`.

    A slot is a row ``(hash, entry + 1)``, 0 meaning empty: hash and entry share a cache line.
    """
    n = b - a
    e = state[_ENTRIES]
    if e + 2 > len(cp_off) or cp_off[e] + n > len(cp_arena) or 2 * (e + 1) > len(slots):
        state[_WANTED] = n
        return -1
    h = word_hash(cps, a, b)
    mask = len(slots) - 1
    slot = np.int64(h >> np.uint64(16)) & mask
    while True:
        stored = slots[slot, 1]
        if stored == 0:
            break
        if slots[slot, 0] == h:
            e = np.int64(stored) - 1
            base = cp_off[e]
            if cp_off[e + 1] - base == n:
                k = 0
                while k < n and cp_arena[base + k] == cps[a + k]:
                    k += 1
                if k == n:
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


@numba.njit(cache=True, nogil=True)
def _rehash(old, new):
    mask = len(new) - 1
    for row in range(len(old)):
        if old[row, 1] != 0:
            slot = np.int64(old[row, 0] >> np.uint64(16)) & mask
            while new[slot, 1] != 0:
                slot = (slot + 1) & mask
            new[slot, 0] = old[row, 0]
            new[slot, 1] = old[row, 1]


def _resized(arr: np.ndarray, size: int) -> np.ndarray:
    out = np.empty(size, arr.dtype)
    out[:len(arr)] = arr
    return out


class WordCache:
    """The memo's arrays, their growth and the reset policy (see the module docstring)."""

    def __init__(self, max_entries: int = 1 << 18, max_code_points: int = 1 << 21):
        self.max_entries, self.max_code_points = max_entries, max_code_points
        self.clears = 0
        self._empty()

    def _empty(self) -> None:
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
        """Clear the memo if it has outgrown its limits (only between batches: a batch's
        pending work refers to entry numbers)."""
        if self.entries > self.max_entries or self.cp_off[self.entries] > self.max_code_points:
            self.clears += 1
            self._empty()

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

    def resolve(self, bpe) -> int:
        """Compute the ids of the pending entries with ``bpe(words) -> list of id lists``;
        returns how many there were."""
        first, last = self.pending()
        if first == last:
            return 0
        offsets = self.cp_off[first:last + 1]
        text = self.cp_arena[offsets[0]:offsets[-1]].tobytes().decode("utf-32-le")
        rel = (offsets - offsets[0]).tolist()
        ids = bpe([text[a:b] for a, b in zip(rel[:-1], rel[1:])])
        lengths = np.fromiter(map(len, ids), np.int64, last - first)
        base = self.id_off[first]
        self.id_off[first + 1:last + 1] = base + np.cumsum(lengths)
        end = int(self.id_off[last])
        if end > len(self.id_arena):
            self.id_arena = _resized(self.id_arena, max(end, 2 * len(self.id_arena)))
        self.id_arena[base:end] = np.fromiter(itertools.chain.from_iterable(ids), np.uint32,
                                              end - base)
        self.state[_RESOLVED] = last
        return last - first
