"""MinHash signatures of documents, computed a whole batch at a time (the compiled pass is
:mod:`pileprep.dedup.kernel`), and the LSH band keys and Jaccard estimates of signatures.

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
import unicodedata
from typing import Sequence

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


def _nfc_bytes(text: str) -> bytes:
    """NFC, as UTF-8: lower case is applied by the compiled pass (an ASCII text is NFC already)."""
    return text.encode() if text.isascii() else nfc(text).encode()


def _lowered(text: str) -> bytes:
    """NFC and lower case (``str.lower``), as UTF-8: a text the compiled pass cannot lower."""
    return nfc(text).lower().encode()


@functools.lru_cache(maxsize=1)
def lower_table() -> np.ndarray:
    """For every code point, the code point of its ``str.lower``, or -1 where that is several
    characters or depends on the neighbours (U+03A3, final sigma). Kept in the derived-table
    cache, named by the Unicode version: ``str.lower`` on whole texts was 25 % of the
    signatures' time on real text, a table lookup per character costs next to nothing."""
    def build() -> np.ndarray:
        table = np.full(0x110000, -1, np.int32)
        for cp in range(0x110000):
            low = chr(cp).lower()
            if len(low) == 1 and cp != 0x3A3:
                table[cp] = ord(low)
        return table

    return tables.cached_table(f"lower-unicode{unicodedata.unidata_version}", build, np.int32,
                               0x110000)


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
    out = np.full((len(texts), num_perm), _EMPTY, np.uint32)
    has = np.zeros(len(texts), np.bool_)
    redo = _sign([_nfc_bytes(t) for t in texts], num_perm, seed, n, lower_table(), out, has)
    if redo.any():  # lowered by Python, then signed as they are
        again = np.flatnonzero(redo)
        sub_out = np.full((len(again), num_perm), _EMPTY, np.uint32)
        sub_has = np.zeros(len(again), np.bool_)
        _sign([_lowered(texts[i]) for i in again], num_perm, seed, n, np.zeros(0, np.int32),
              sub_out, sub_has)
        out[again], has[again] = sub_out, sub_has
    return out, has


def _sign(pieces: list[bytes], num_perm: int, seed: int, n: int, lower_cp: np.ndarray,
          out: np.ndarray, has: np.ndarray) -> np.ndarray:
    """Run the compiled pass on the UTF-8 ``pieces``; the documents to sign again."""
    # Imported here: the driver of a build, which never signs, does not load numba (0.14 s).
    from pileprep.dedup.kernel import minhash_batch

    a, b = permutations(num_perm, seed)
    lengths = np.fromiter(map(len, pieces), np.int64, len(pieces))
    ends = np.cumsum(lengths)
    raw = np.frombuffer(b"".join(pieces), np.uint8)
    redo = np.zeros(len(pieces), np.bool_)
    minhash_batch(raw, ends - lengths, ends, n, a, b, out, has, lower_cp, redo)
    return redo


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per document and band: equal keys mean equal band values (whp).

    The band index is hashed in, so keys of different bands never meet in one bucket. For
    each band: ``h = fmix64(band + 1)``, then for each of its values ``h = fmix64(h * BASE +
    value)`` (mod 2^64). In numpy, not compiled: the LSH steps of a small corpus run in the
    driver, which would start numba only for this (0.45 s; this takes 8 ms for 6,714
    documents, 0.15 s for 127,550).
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
