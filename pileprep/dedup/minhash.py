"""MinHash signatures of documents, computed a whole batch at a time with numpy.

The signature of a document is the datasketch ``MinHash`` (scheme ``"affine32"``) of its set of
shingles, with :func:`shingle_hash` as datasketch's ``hashfunc``. Only the arithmetic is
reorganised: instead of one Python call per shingle, a batch of documents becomes one byte
buffer, every shingle's hash comes from prefix sums over that buffer, and the permutations run
as one matrix product per chunk of shingles.

Normalization (``NORMALIZATION`` names it in every signature store): Unicode NFC as Python's
``unicodedata`` implements it, lower case (``str.lower``), whitespace runs (``str.split``'s
definition) collapsed to one ASCII space, ends stripped. Shingles are runs of ``n`` consecutive
words, as the UTF-8 bytes of the words joined by single spaces; a document of fewer than ``n``
words has one shingle, all its words; a document with no words has no shingles and is never a
duplicate.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Sequence

import numpy as np

NORMALIZATION = "nfc-lower-ws1"
_U64 = np.uint64
_MASK64 = (1 << 64) - 1
# Polynomial hash base: odd, so it has an inverse modulo 2^64 and substrings hash in O(1).
_BASE = 0x9E3779B97F4A7C15
_BASE_INV = pow(_BASE, -1, 1 << 64)
_EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's "no value seen" for affine32
_CHUNK = 16384  # shingles per permutation step: an 8 MiB uint32 block at 128 permutations


def normalize(text: str) -> str:
    # ASCII is always NFC (isascii() is O(1) on str), and the quick check is ~10x cheaper than
    # a normalize() that would change nothing.
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return " ".join(text.lower().split())


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


def _fmix32(h: np.ndarray) -> np.ndarray:
    # datasketch pre-mixes every hashfunc output with this before permuting (affine32).
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


class _Powers:
    """BASE**j and BASE**-j modulo 2^64 for j < n, grown on demand (per process)."""

    def __init__(self) -> None:
        self.pw = np.ones(1, _U64)
        self.ipw = np.ones(1, _U64)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.pw) < n:
            size = max(n, 2 * len(self.pw))
            self.pw = np.full(size, _BASE, _U64)
            self.pw[0] = 1
            np.multiply.accumulate(self.pw, out=self.pw)  # wraps modulo 2^64, as intended
            self.ipw = np.full(size, _BASE_INV, _U64)
            self.ipw[0] = 1
            np.multiply.accumulate(self.ipw, out=self.ipw)
        return self.pw[:n], self.ipw[:n]


_powers = _Powers()


# str.split()'s whitespace, as UTF-8: ASCII bytes, and the multi-byte spaces (lead bytes, then
# the allowed continuation bytes). Words are the runs of bytes that are not part of one.
_ASCII_WS = np.zeros(256, bool)
_ASCII_WS[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_WIDE_WS = [
    (b"\xc2", bytes([0x85, 0xa0])),
    (b"\xe1\x9a", b"\x80"),
    (b"\xe2\x80", bytes([*range(0x80, 0x8b), 0xa8, 0xa9, 0xaf])),
    (b"\xe2\x81", b"\x9f"),
    (b"\xe3\x80", b"\x80"),
]


def _whitespace(raw: np.ndarray) -> np.ndarray:
    ws = raw <= 32
    low = np.flatnonzero(ws)
    ws[low[~_ASCII_WS[raw[low]]]] = False  # control bytes <= 32 that are not whitespace
    for lead, last in _WIDE_WS:
        hit = raw[:len(raw) - len(lead)] == lead[0]
        for k, byte in enumerate(lead[1:], 1):
            hit &= raw[k:len(raw) - len(lead) + k] == byte
        hit &= np.isin(raw[len(lead):], np.frombuffer(last, np.uint8))
        at = np.flatnonzero(hit)
        for k in range(len(lead) + 1):
            ws[at + k] = True
    return ws


def _lowered(text: str) -> bytes:
    """NFC and lower case, as UTF-8; whitespace is found later, in bytes."""
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return text.lower().encode()


def shingle_hashes(texts: Sequence[str], n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Hash every shingle of every document; return ``(hashes uint32, shingles per document)``.

    The documents are joined by newlines into one buffer; words are the runs of non-whitespace
    bytes. The normalized text (single spaces) is never built: each byte's position in it comes
    from a running count, and shingles are hashed on those positions.
    """
    pieces = [_lowered(t) for t in texts]
    raw = np.frombuffer(b"\n".join(pieces) + b"\n", np.uint8)
    ws = _whitespace(raw)
    edge = np.diff(ws.view(np.int8), prepend=np.int8(1))
    word_start = np.flatnonzero(edge == -1)  # whitespace -> word
    word_end = np.flatnonzero(edge == 1)  # word -> whitespace (exclusive end); a \n ends all
    doc_start = np.cumsum([0] + [len(p) + 1 for p in pieces[:-1]])
    doc_of_word = np.searchsorted(doc_start, word_start, side="right") - 1
    words = np.bincount(doc_of_word, minlength=len(texts)).astype(np.int64)
    counts = np.where(words > 0, np.maximum(words - n + 1, 1), 0)
    if not counts.any():
        return np.zeros(0, np.uint32), counts
    # Normalized text: the words of a document, one space between consecutive words.
    lengths = word_end - word_start
    same_doc_next = np.zeros(len(word_start), bool)
    same_doc_next[:-1] = doc_of_word[1:] == doc_of_word[:-1]
    npos_start = np.cumsum(lengths + same_doc_next) - (lengths + same_doc_next)
    keep = ~ws
    keep[word_end[same_doc_next]] = True  # the first whitespace byte after a word becomes " "
    norm = raw[keep]
    norm[(npos_start + lengths)[same_doc_next]] = 32
    pw, ipw = _powers.get(len(norm) + 1)
    prefix = np.empty(len(norm) + 1, _U64)
    prefix[0] = 0
    terms = norm.astype(_U64)
    terms *= pw[:-1]
    np.cumsum(terms, out=prefix[1:])
    # Shingle k of a document whose words are f..l covers words f+k .. min(f+k+n-1, l).
    last_word = np.cumsum(words) - 1
    first = last_word - words + 1
    total = int(counts.sum())
    lo = np.arange(total) + np.repeat(first - (np.cumsum(counts) - counts), counts)
    hi = np.minimum(lo + (n - 1), np.repeat(last_word, counts))
    s, e = npos_start[lo], npos_start[hi] + lengths[hi]
    h = (prefix[e] - prefix[s]) * ipw[s]
    return (_fmix64(h) >> _U64(32)).astype(np.uint32), counts


@functools.lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters ``(a, b)`` for ``num_perm`` and ``seed``."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def signatures(texts: Sequence[str], num_perm: int = 128, seed: int = 1,
               n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures ``(len(texts), num_perm)`` uint32, and a has-shingles mask."""
    a, b = permutations(num_perm, seed)
    hv, counts = shingle_hashes(texts, n)
    out = np.full((len(texts), num_perm), _EMPTY, np.uint32)
    if len(hv) == 0:
        return out, counts > 0
    hv = _fmix32(hv)
    doc = np.repeat(np.arange(len(texts)), counts)
    b_col = b[:, None]
    # Permutations along axis 0 and shingles along axis 1: the per-document minimum is then a
    # reduction over contiguous runs, about 15x faster in numpy than the transposed layout.
    for lo in range(0, len(hv), _CHUNK):
        chunk_docs = doc[lo:lo + _CHUNK]
        phv = np.multiply.outer(a, hv[lo:lo + _CHUNK])
        phv += b_col
        heads = np.flatnonzero(np.diff(chunk_docs, prepend=-1))
        mins = np.minimum.reduceat(phv, heads, axis=1).T
        rows = chunk_docs[heads]
        out[rows] = np.minimum(out[rows], mins)
    return out, counts > 0


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


def lsh_params(threshold: float, num_perm: int, verify: bool) -> tuple[int, int]:
    """datasketch's optimal ``(bands, rows)`` for the threshold.

    With verification on, a false candidate costs one comparison while a missed pair is a
    duplicate left in the data, so the optimizer is asked to weigh false negatives 0.95.
    """
    from datasketch import MinHashLSH

    weights = (0.05, 0.95) if verify else (0.5, 0.5)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
    return lsh.b, lsh.r


def jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of row pairs: the share of equal signature values."""
    return (sig_a == sig_b).mean(axis=-1)
