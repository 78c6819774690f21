"""Byte-level BPE as compiled code over a tokenizer file's merge table: the pure algorithm core.

A word's UTF-8 bytes start as one symbol each (the vocabulary's byte-level characters); then,
while any adjacent pair of symbols is in the merge table, the pair with the lowest rank is
merged, the leftmost one when several have that rank. That is the rule ``tokenizers`` applies
(its priority queue is ordered by rank, then position, and drops pairs a merge has consumed),
so ids equal the reference's; tests compare them on every distinct word of the differential
corpora.

Merges are found in an open-addressing table keyed by ``left * vocab_size + right``. A word
keeps the rank of each adjacent pair in an array; after a merge only the two pairs around it
are looked up again, so a word of ``n`` bytes costs ``O(n)`` lookups and ``O(n^2)`` compares,
which is cheap for words of ordinary length. Longer words (:data:`LONG_WORD` code points and
up) are left to the reference's own model by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

LONG_WORD = 512  # code points; longer words go to the reference (quadratic compares)
_NONE = np.int64(1 << 62)
_UTF8_BYTES = set(range(0xC0)) | set(range(0xC2, 0xF5))


@dataclass(frozen=True)
class MergeTable:
    """The merge table as flat arrays: ``keys[slot] = left * vocab + right + 1`` (0: empty),
    ``ranks[slot]`` and ``merged[slot]``; ``byte_ids[b]``: the id of byte ``b`` alone."""

    vocab_size: int
    byte_ids: np.ndarray
    keys: np.ndarray
    ranks: np.ndarray
    merged: np.ndarray

    @classmethod
    def from_model(cls, model: dict, byte_chars: dict[int, str]) -> "MergeTable":
        """From a ``tokenizer.json`` BPE model; ``byte_chars[b]`` is byte b's vocabulary
        character. Raises ValueError if a byte has no id (it could not be encoded)."""
        vocab = model["vocab"]
        # Bytes C0, C1 and F5-FF never occur in UTF-8, so they need no token.
        missing = [b for b in range(256) if byte_chars[b] not in vocab and b in _UTF8_BYTES]
        if missing:
            raise ValueError(f"the vocabulary has no token for byte {missing[0]}")
        byte_ids = np.array([vocab.get(byte_chars[b], -1) for b in range(256)], np.int64)
        size = max(vocab.values()) + 1
        pairs = []
        for rank, merge in enumerate(model["merges"]):
            left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
            joined = vocab.get(left + right)
            if left in vocab and right in vocab and joined is not None:
                pairs.append((vocab[left] * size + vocab[right], rank, joined))
        slots = 1 << max(4, (2 * len(pairs)).bit_length())
        keys = np.zeros(slots, np.int64)
        ranks = np.zeros(slots, np.int64)
        merged = np.zeros(slots, np.int64)
        columns = np.array(pairs, np.int64).reshape(-1, 3)
        _insert_all(keys, ranks, merged, columns[:, 0], columns[:, 1], columns[:, 2])
        return cls(size, byte_ids, keys, ranks, merged)


@numba.njit(cache=True, nogil=True, inline="always")
def _slot_of(key):
    h = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    return np.int64(h >> np.uint64(20))


@numba.njit(cache=True, nogil=True)
def _insert(keys, ranks, merged, key, rank, joined):
    mask = len(keys) - 1
    slot = _slot_of(key) & mask
    while keys[slot] != 0:
        if keys[slot] == key + 1:
            return  # a repeated pair keeps its first (lowest) rank
        slot = (slot + 1) & mask
    keys[slot] = key + 1
    ranks[slot] = rank
    merged[slot] = joined


@numba.njit(cache=True, nogil=True)
def _insert_all(keys, ranks, merged, pair_keys, pair_ranks, pair_merged):
    for i in range(len(pair_keys)):
        _insert(keys, ranks, merged, pair_keys[i], pair_ranks[i], pair_merged[i])


@numba.njit(cache=True, nogil=True, inline="always")
def _find(keys, key):
    """Slot of ``key`` or -1."""
    mask = len(keys) - 1
    slot = _slot_of(key) & mask
    while True:
        k = keys[slot]
        if k == key + 1:
            return slot
        if k == 0:
            return -1
        slot = (slot + 1) & mask


@numba.njit(cache=True, nogil=True)
def _utf8(cps, a, b, out):
    """UTF-8 bytes of ``cps[a:b]`` into ``out``; returns their number."""
    n = 0
    for k in range(a, b):
        c = cps[k]
        if c < 0x80:
            out[n] = c
            n += 1
        elif c < 0x800:
            out[n] = 0xC0 | (c >> 6)
            out[n + 1] = 0x80 | (c & 0x3F)
            n += 2
        elif c < 0x10000:
            out[n] = 0xE0 | (c >> 12)
            out[n + 1] = 0x80 | ((c >> 6) & 0x3F)
            out[n + 2] = 0x80 | (c & 0x3F)
            n += 3
        else:
            out[n] = 0xF0 | (c >> 18)
            out[n + 1] = 0x80 | ((c >> 12) & 0x3F)
            out[n + 2] = 0x80 | ((c >> 6) & 0x3F)
            out[n + 3] = 0x80 | (c & 0x3F)
            n += 4
    return n


@numba.njit(cache=True, nogil=True, inline="always")
def _pair_rank(vocab_size, keys, ranks, left, right):
    slot = _find(keys, left * vocab_size + right)
    return ranks[slot] if slot >= 0 else _NONE


@numba.njit(cache=True, nogil=True)
def merge_word(sym, n, vocab_size, keys, ranks, merged, pair):
    """Apply the merges to the ``n`` symbols in ``sym`` in place; returns the new count.
    ``pair`` is scratch space of at least ``n`` entries."""
    for i in range(n - 1):
        pair[i] = _pair_rank(vocab_size, keys, ranks, sym[i], sym[i + 1])
    while n > 1:
        best, at = _NONE, -1
        for i in range(n - 1):
            if pair[i] < best:  # strict: the leftmost of equal ranks
                best, at = pair[i], i
        if at < 0:
            break
        sym[at] = merged[_find(keys, sym[at] * vocab_size + sym[at + 1])]
        for i in range(at + 1, n - 1):
            sym[i] = sym[i + 1]
            pair[i] = pair[i + 1]
        n -= 1
        if at > 0:
            pair[at - 1] = _pair_rank(vocab_size, keys, ranks, sym[at - 1], sym[at])
        if at < n - 1:
            pair[at] = _pair_rank(vocab_size, keys, ranks, sym[at], sym[at + 1])
    return n


@numba.njit(cache=True, nogil=True)
def encode_words(cps, offsets, byte_ids, vocab_size, keys, ranks, merged, given, given_off,
                 given_ids, out_off, out):
    """Ids of the words ``cps[offsets[w]:offsets[w + 1]]``, in order: word w's ids go to
    ``out[out_off[w]:out_off[w + 1]]`` (``out_off[0]`` is set by the caller; ``out`` must hold
    4 ids per code point). A word with ``given[w] = k >= 0`` is not merged here: its ids are
    ``given_ids[given_off[k]:given_off[k + 1]]`` (long words, encoded by the reference)."""
    longest = 0
    for w in range(len(offsets) - 1):
        if given[w] < 0:
            longest = max(longest, offsets[w + 1] - offsets[w])
    raw = np.empty(4 * longest + 4, np.int64)
    sym = np.empty(4 * longest + 4, np.int64)
    pair = np.empty(4 * longest + 4, np.int64)
    p = out_off[0]
    for w in range(len(offsets) - 1):
        k = given[w]
        if k >= 0:
            for q in range(given_off[k], given_off[k + 1]):
                out[p] = given_ids[q]
                p += 1
        else:
            n = _utf8(cps, offsets[w], offsets[w + 1], raw)
            for i in range(n):
                sym[i] = byte_ids[raw[i]]
            n = merge_word(sym, n, vocab_size, keys, ranks, merged, pair)
            for i in range(n):
                out[p + i] = sym[i]
            p += n
        out_off[w + 1] = p
