"""GPT-2's pre-tokenization rules as compiled code (numba), character classes from the reference.

The ByteLevel pre-tokenizer of ``tokenizers`` splits text with the pattern

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

(first alternative that matches wins, each alternative greedy). Only three character classes
matter: letters, numbers and whitespace; everything else is "other". :func:`piece_end` applies
the alternatives by hand in one forward scan. The classes come from the reference's own regex
engine (Oniguruma, with its own Unicode version), probed once over every code point and cached
on disk, so a character new in Unicode is classed exactly as the reference classes it.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from pileprep.core import tables

OTHER, LETTER, NUMBER, SPACE = 0, 1, 2, 3
_PROBES = ((LETTER, r"\p{L}+"), (NUMBER, r"\p{N}+"), (SPACE, r"\s+"))
_APOSTROPHE, _BLANK = 39, 32


def _probe_classes() -> np.ndarray:
    """Ask the reference's regex engine which code points each class pattern matches."""
    from tokenizers import Regex
    from tokenizers.pre_tokenizers import Split

    points = np.concatenate([np.arange(0xD800), np.arange(0xE000, 0x110000)]).astype(np.uint32)
    text = points.tobytes().decode("utf-32-le")  # every scalar value once, surrogates excluded
    table = np.full(0x110000, OTHER, np.uint8)
    for cls, pattern in _PROBES:
        matched = np.ones(len(points), bool)
        # "removed" returns what the pattern did not match; offsets count characters.
        for _, (start, end) in Split(Regex(pattern), behavior="removed").pre_tokenize_str(text):
            matched[start:end] = False
        if (table[points[matched]] != OTHER).any():
            raise ValueError(f"character classes overlap at {pattern}")
        table[points[matched]] = cls
    return table


@functools.lru_cache(maxsize=1)
def class_table() -> np.ndarray:
    """``table[cp]``: OTHER, LETTER, NUMBER or SPACE, as the reference's regex engine sees cp
    (probing takes seconds: kept on disk per ``tokenizers`` version, see :mod:`.tables`)."""
    import tokenizers

    table = tables.cached_table(f"gpt2-classes-tokenizers-{tokenizers.__version__}",
                                _probe_classes, np.uint8, 0x110000)
    if table.max() > SPACE:
        raise ValueError("damaged character class table")
    return table


@numba.njit(cache=True, nogil=True)
def piece_end(cps, cls, i, end):
    """End of the pre-token starting at ``i`` in ``cps[:end]`` (``end`` acts as end of text)."""
    c = cps[i]
    if c == _APOSTROPHE and i + 1 < end:  # 's 't 'm 'd, then 're 've 'll (case-sensitive)
        n = cps[i + 1]
        if n == 115 or n == 116 or n == 109 or n == 100:
            return i + 2
        if i + 2 < end:
            m = cps[i + 2]
            if (m == 101 and (n == 114 or n == 118)) or (n == 108 and m == 108):
                return i + 3
    kind = cls[c]
    first = i
    if c == _BLANK and i + 1 < end and cls[cps[i + 1]] != SPACE:
        kind = cls[cps[i + 1]]  # " ?" prefix of a letter, number or other run
        first = i + 1
    j = first + 1
    while j < end and cls[cps[j]] == kind:
        j += 1
    if kind != SPACE or j == end:
        return j
    # \s+(?!\S): the run minus its last character, which then prefixes the next piece or (when
    # the run is one character) is matched alone by \s+.
    return j - 1 if j - 1 > i else j


@numba.njit(cache=True, nogil=True)
def _split(cps, cls, ends):
    n, i = 0, 0
    while i < len(cps):
        i = piece_end(cps, cls, i, len(cps))
        ends[n] = i
        n += 1
    return n


def split(text: str) -> list[str]:
    """The pre-tokens of ``text`` (no added tokens or normalization): for tests and debugging."""
    cps = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    ends = np.empty(len(cps), np.int64)
    n = _split(cps, class_table(), ends)
    starts = [0, *ends[:n - 1].tolist()]
    return [text[a:b] for a, b in zip(starts, ends[:n].tolist())]
