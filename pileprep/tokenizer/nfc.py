"""Unicode NFC, computed run by run of non-ASCII characters (several times faster than whole texts).

CPython's ``unicodedata.normalize`` walks every character of a text that is not already NFC,
ASCII included. An ASCII character never composes with what precedes it and stops canonical
reordering, so a text can be cut just before the character that precedes each run of
non-ASCII characters, and each cut normalized on its own: the ASCII between runs is copied,
and only the runs (each with its one leading character) are normalized. On the benchmark
corpus this is about 4x faster than normalizing whole documents (``benchmarks/engines.py``), with identical results
(``tests/dedup_ref.py`` normalizes whole texts, and the dedup tests compare).

Python's Unicode version may be older than another normalizer's (the tokenizer's Rust one).
By Unicode's normalization stability policy, NFC of characters assigned in the older version
is the same in every later one, so :func:`nfc` can hand only the runs holding characters
Python does not know to the other normalizer.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Callable

import numpy as np

from pileprep.core import tables


def code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


def _build_unassigned() -> np.ndarray:
    table = np.zeros(0x110000, bool)
    table[0x80:] = [unicodedata.category(chr(cp)) == "Cn" for cp in range(0x80, 0x110000)]
    return table


@functools.lru_cache(maxsize=1)
def unassigned_table() -> np.ndarray:
    """``table[cp]`` is True for the code points Python's ``unicodedata`` has as unassigned."""
    return tables.cached_table(f"unassigned-unicode-{unicodedata.unidata_version}",
                               _build_unassigned, bool, 0x110000)


def nfc(text: str, newer: Callable[[str], str] | None = None) -> str:
    """NFC of ``text`` as Python's ``unicodedata`` computes it; with ``newer`` (a normalizer of
    a later Unicode version), as ``newer`` computes it."""
    if text.isascii():  # ASCII is NFC in every Unicode version
        return text
    cps = unknown = None
    if newer is not None:
        cps = code_points(text)
        unknown = unassigned_table()[cps]
        if not unknown.any():
            unknown = None
    if unknown is None and unicodedata.is_normalized("NFC", text):
        return text
    if cps is None:
        cps = code_points(text)
    wide = np.concatenate([[False], cps >= 0x80, [False]])
    edges = np.flatnonzero(wide[1:] != wide[:-1])
    out, last = [], 0
    for a, b in zip(edges[::2].tolist(), edges[1::2].tolist()):
        start = max(a - 1, last)
        out.append(text[last:start])
        piece = text[start:b]
        if unknown is not None and unknown[a:b].any():
            out.append(newer(piece))
        else:
            out.append(unicodedata.normalize("NFC", piece))
        last = b
    out.append(text[last:])
    return "".join(out)
