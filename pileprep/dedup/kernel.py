"""The compiled (numba) pass of :func:`pileprep.dedup.minhash.signatures`: words, shingle
hashes and permutations of a batch of documents in one loop per document.

Its own module so that only processes that sign documents load numba: a build's driver
imports :mod:`pileprep.dedup.minhash` for its settings and LSH steps, never this.
"""

from __future__ import annotations

import numba
import numpy as np

from pileprep.dedup.minhash import _BASE, _BASE_INV

# str.split()'s whitespace, as UTF-8: these ASCII bytes, and the multi-byte spaces U+0085,
# U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F and U+3000. Words are the
# maximal runs of bytes that are not part of one.
_ASCII_WS = np.zeros(256, np.bool_)
_ASCII_WS[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
# Per byte: 0 part of a word, 1 whitespace, 2 may start a multi-byte space (look further).
_BYTE_CLASS = _ASCII_WS.astype(np.uint8)
_BYTE_CLASS[[0xC2, 0xE1, 0xE2, 0xE3]] = 2
# ASCII upper case to lower, every other byte as it is: an ASCII document is lower-cased in the
# compiled pass instead of by str.lower (for ASCII text the same bytes: str.lower maps only A-Z
# there). A lowered non-ASCII document has no A-Z left, so the table is a no-op on it.
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[ord("A"):ord("Z") + 1] += 32


@numba.njit(cache=True, nogil=True)
def _space_len(raw, i, end):
    """Bytes of the whitespace character starting at ``raw[i]``, 0 if it starts none."""
    c = raw[i]
    if c < 128:
        return 1 if _ASCII_WS[c] else 0
    if c == 0xC2 and i + 1 < end:
        return 2 if raw[i + 1] == 0x85 or raw[i + 1] == 0xA0 else 0
    if i + 2 >= end or c < 0xE1 or c > 0xE3:
        return 0
    c1, c2 = raw[i + 1], raw[i + 2]
    if c == 0xE1:
        return 3 if c1 == 0x9A and c2 == 0x80 else 0
    if c == 0xE3:
        return 3 if c1 == 0x80 and c2 == 0x80 else 0
    if c1 == 0x80:  # lead byte 0xE2
        return 3 if (0x80 <= c2 <= 0x8A) or c2 == 0xA8 or c2 == 0xA9 or c2 == 0xAF else 0
    return 3 if c1 == 0x81 and c2 == 0x9F else 0


@numba.njit(cache=True, nogil=True)
def _fmix64_nb(h):
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


@numba.njit(cache=True, nogil=True)
def _fmix32_nb(h):
    # datasketch pre-mixes every hashfunc output with this before permuting (affine32).
    h ^= h >> np.uint32(16)
    h = np.uint32(h * np.uint32(0x85EBCA6B))
    h ^= h >> np.uint32(13)
    h = np.uint32(h * np.uint32(0xC2B2AE35))
    return h ^ (h >> np.uint32(16))


@numba.njit(cache=True, nogil=True)
def _utf8_len(cp):
    return 1 if cp < 0x80 else (2 if cp < 0x800 else (3 if cp < 0x10000 else 4))


@numba.njit(cache=True, nogil=True)
def _utf8_byte(cp, j):
    """Byte ``j`` of the UTF-8 encoding of code point ``cp``."""
    size = _utf8_len(cp)
    if size == 1:
        return cp
    shift = 6 * (size - 1 - j)
    if j == 0:
        return ((0xF00 >> size) & 0xFF) | (cp >> shift)
    return 0x80 | ((cp >> shift) & 0x3F)


@numba.njit(cache=True, nogil=True)
def minhash_batch(raw, starts, ends, n, a, b, out, has, lower_cp, redo):
    """Signatures of the documents ``raw[starts[d]:ends[d]]`` (NFC UTF-8) into ``out[d]``;
    ``has[d]`` says whether it has a shingle.

    Lower case is applied here, character by character: ASCII by a byte table, other
    characters by ``lower_cp`` (code point -> its ``str.lower``, -1 where that is not one
    character independent of its neighbours: then ``redo[d]`` is set and the caller signs the
    document again, lowered by Python; an empty ``lower_cp`` leaves non-ASCII as it is).

    One pass over each document finds its words and the polynomial hash of the normalized text
    (words joined by single spaces) at every word start and end, so a shingle's hash is a
    difference of two prefix values times an inverse power of the base; each shingle is then
    mixed and permuted, keeping the minimum per permutation.
    """
    P = a.shape[0]
    base, base_inv = np.uint64(_BASE), np.uint64(_BASE_INV)
    longest = 1
    for d in range(starts.shape[0]):
        longest = max(longest, ends[d] - starts[d])
    w_pre = np.empty(longest // 2 + 2, np.uint64)  # prefix hash at each word's start...
    w_end = np.empty(longest // 2 + 2, np.uint64)  # ...and at its end
    w_inv = np.empty(longest // 2 + 2, np.uint64)  # BASE**-(word start in the normalized text)
    for d in range(starts.shape[0]):
        i, end = starts[d], ends[d]
        words = 0
        acc, pw, ipw = np.uint64(0), np.uint64(1), np.uint64(1)
        in_word = False
        while i < end:
            # The byte's class is looked up here, in the loop: a call per byte (numba did not
            # inline one) cost ~11 ns a byte, five times the rest of the pass on real text.
            c = _BYTE_CLASS[raw[i]]
            k = 0 if c == 0 else (1 if c == 1 else _space_len(raw, i, end))
            if k:
                if in_word:
                    w_end[words] = acc
                    words += 1
                    in_word = False
                i += k
                continue
            if not in_word:
                if words:  # one space between consecutive words
                    acc += np.uint64(32) * pw
                    pw *= base
                    ipw *= base_inv
                w_pre[words], w_inv[words] = acc, ipw
                in_word = True
            c = raw[i]
            if c < 0x80 or lower_cp.shape[0] == 0:
                acc += np.uint64(_LOWER[c]) * pw
                pw *= base
                ipw *= base_inv
                i += 1
                continue
            # A non-ASCII character: its lower case from the table, as UTF-8 bytes.
            size = 2 if c < 0xE0 else (3 if c < 0xF0 else 4)
            cp = np.int64(c & (0x1F if size == 2 else (0x0F if size == 3 else 0x07)))
            for j in range(1, size):
                cp = (cp << 6) | (raw[i + j] & 0x3F)
            cp = lower_cp[cp]
            if cp < 0:  # its lower case depends on its neighbours or is several characters
                redo[d] = True
                cp = 0
            for j in range(_utf8_len(cp)):
                acc += np.uint64(_utf8_byte(cp, j)) * pw
                pw *= base
                ipw *= base_inv
            i += size
        if in_word:
            w_end[words] = acc
            words += 1
        has[d] = words > 0
        row = out[d]
        for first in range(max(words - n + 1, 1) if words else 0):
            last = min(first + n - 1, words - 1)
            h = np.uint32(_fmix64_nb((w_end[last] - w_pre[first]) * w_inv[first]) >> np.uint64(32))
            h = _fmix32_nb(h)
            for p in range(P):  # one simple loop: the compiler vectorizes it
                row[p] = min(row[p], np.uint32(a[p] * h + b[p]))
