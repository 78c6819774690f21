"""MinHash signatures of documents, computed a whole batch at a time (numba).

The signature of a document is the datasketch ``MinHash`` (scheme ``"affine32"``) of its set of
shingles, with :func:`shingle_hash` as datasketch's ``hashfunc``. Only the arithmetic is
reorganised: a batch of documents becomes one byte buffer, and one compiled pass (numba) per
document finds its words, hashes every shingle from prefix values of a polynomial hash, and
applies the permutations in loops the compiler vectorizes. numba is used because this loop is
the cost of ``--dedup``: numpy needed three passes over a (permutations x shingles) array per
chunk of shingles, the compiled loop none.

Normalization (``NORMALIZATION`` names it in every signature store): Unicode NFC as Python's
``unicodedata`` implements it, lower case (``str.lower``), whitespace runs (``str.split``'s
definition) collapsed to one ASCII space, ends stripped. Shingles are runs of ``n`` consecutive
words, as the UTF-8 bytes of the words joined by single spaces; a document of fewer than ``n``
words has one shingle, all its words; a document with no words has no shingles and is never a
duplicate.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numba
import numpy as np

from pileprep.core import tables
from pileprep.dedup.lsh import _datasketch_version, banding, lsh_params  # noqa: F401 - here too
from pileprep.tokenizer.nfc import nfc

NORMALIZATION = "nfc-lower-ws1"
_U64 = np.uint64
_MASK64 = (1 << 64) - 1
# Polynomial hash base: odd, so it has an inverse modulo 2^64 and substrings hash in O(1).
_BASE = 0x9E3779B97F4A7C15
_BASE_INV = pow(_BASE, -1, 1 << 64)
_EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's "no value seen" for affine32


def normalize(text: str) -> str:
    return " ".join(nfc(text).lower().split())


def _fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK64
    return h ^ (h >> 33)


def shingle_hash(data: bytes) -> int:
    """The 32-bit shingle hash, one value at a time (datasketch's ``hashfunc``; reference).

    ``sum(data[j] * BASE**j) mod 2**64``, passed through MurmurHash3's 64-bit finalizer; the
    high 32 bits are the hash.
    """
    h, p = 0, 1
    for byte in data:
        h = (h + byte * p) & _MASK64
        p = (p * _BASE) & _MASK64
    return _fmix64_int(h) >> 32


def _fmix64(h: np.ndarray) -> np.ndarray:
    h ^= h >> _U64(33)
    h *= _U64(0xFF51AFD7ED558CCD)
    h ^= h >> _U64(33)
    h *= _U64(0xC4CEB9FE1A85EC53)
    h ^= h >> _U64(33)
    return h


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
def _minhash_batch(raw, starts, ends, n, a, b, out, has):
    """Signatures of the documents ``raw[starts[d]:ends[d]]`` (NFC, lower-cased UTF-8; ASCII
    upper case is lowered here) into ``out[d]``; ``has[d]`` says whether it has a shingle.

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
            acc += np.uint64(_LOWER[raw[i]]) * pw
            pw *= base
            ipw *= base_inv
            i += 1
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
                v = np.uint32(a[p] * h + b[p])
                if v < row[p]:
                    row[p] = v


def _lowered(text: str) -> bytes:
    """NFC and lower case, as UTF-8; whitespace is found later, in bytes. An ASCII text is
    already NFC and is lower-cased by the compiled pass: ``str.lower`` was 60 % of this
    function's time on real text (most documents are ASCII)."""
    if text.isascii():
        return text.encode()
    return nfc(text).lower().encode()


@functools.lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters ``(a, b)`` for ``num_perm`` and ``seed``.

    Kept in the derived-table cache (named by datasketch's version): every worker of a build
    needs them, and asking datasketch costs each one its ~0.7 s import."""
    def build() -> np.ndarray:
        from datasketch import MinHash

        a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        return np.concatenate([a, b]).astype(np.uint32)

    ab = tables.cached_table(f"minhash-affine32-datasketch{_datasketch_version()}-p{num_perm}-s{seed}",
                             build, np.uint32, 2 * num_perm)
    return ab[:num_perm].copy(), ab[num_perm:].copy()


def signatures(texts: Sequence[str], num_perm: int = 128, seed: int = 1,
               n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures ``(len(texts), num_perm)`` uint32, and a has-shingles mask."""
    a, b = permutations(num_perm, seed)
    pieces = [_lowered(t) for t in texts]
    lengths = np.fromiter(map(len, pieces), np.int64, len(pieces))
    ends = np.cumsum(lengths)
    out = np.full((len(texts), num_perm), _EMPTY, np.uint32)
    has = np.zeros(len(texts), np.bool_)
    raw = np.frombuffer(b"".join(pieces), np.uint8)
    _minhash_batch(raw, ends - lengths, ends, n, a, b, out, has)
    return out, has


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per document and band: equal keys mean equal band values (whp).

    The band index is hashed in, so keys of different bands never meet in one bucket.
    """
    n = sig.shape[0]
    keys = np.empty((n, bands), _U64)
    for band in range(bands):
        h = np.full(n, _fmix64_int(band + 1), _U64)
        for col in sig[:, band * rows:(band + 1) * rows].T:
            h = _fmix64(h * _U64(_BASE) + col.astype(_U64))
        keys[:, band] = h
    return keys


def jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of row pairs: the share of equal signature values."""
    return (sig_a == sig_b).mean(axis=-1)
