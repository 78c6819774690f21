"""The suffix-array index of a dataset's token stream: its files, its construction per shard, and
lookups (which token positions hold a sequence of ids).

The ``.bin`` is cut into shards of whole documents (at most ``shard_tokens`` tokens each, a
document longer than that is a shard alone). A shard's suffix array is the permutation of its
token positions ``0 .. n-1`` sorted by the token sequence that starts there and runs to the
shard's end (a suffix that is a prefix of another sorts first); it is stored as raw
little-endian uint32 (positions relative to the shard's first token), 4 bytes per token, in
``OUT_DIR/ngram/shard-NNNNN.sa``. ``OUT_DIR/ngram/index.json`` lists the shards and what the
index was built from; it is written last, so an index without it is unfinished. The tokens are
not copied: lookups read the dataset's own ``.bin``. See docs/formats.md.

Every occurrence of a sequence inside a document lies inside one shard, so the positions found
in every shard's suffix array are all of them. Lookups read with ``pread`` (a binary search
touches ~2 log2(n) scattered places; nothing stays mapped).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pileprep.core import atomic
from pileprep.core.errors import ConfigError, FormatError, NotFoundError
from pileprep.core.files import NGRAM_DIR, NGRAM_META
from pileprep.formats.indexed import FileArray, IndexedDataset, data_files, index_path

FORMAT = "pileprep-suffix-array"
VERSION = 1
SA_DTYPE = np.dtype("<u4")
# A shard's bytes stay below this: pydivsufsort sorts them (2n for 2-byte tokens) with int32
# positions, and with int64 ones (twice the memory) above.
SORT_BYTES = 1 << 31
DEFAULT_SHARD_TOKENS = 1 << 27  # ~2.7 GB of working memory per worker while it is sorted
POSITIONS_AT_ONCE = 1 << 20  # positions read at once from a suffix-array range


def shard_budget(given: int | None, dtype) -> int:
    """``--shard-tokens`` for a dataset of ``dtype`` tokens: ``given`` checked against the most
    a shard may hold (its bytes sorted below ``SORT_BYTES``), or the default when not given."""
    dtype = np.dtype(dtype)
    limit = SORT_BYTES // dtype.itemsize - 1
    if given is None:
        return min(DEFAULT_SHARD_TOKENS, limit)
    if not 1 <= given <= limit:
        raise ConfigError(f"--shard-tokens must be between 1 and {limit:,} for {dtype} tokens")
    return given


def shard_ranges(sizes: np.ndarray, shard_tokens: int, chunk: int = 1 << 22
                 ) -> list[tuple[int, int, int, int]]:
    """``(first_doc, end_doc, first_token, end_token)`` of each shard: whole documents, at most
    ``shard_tokens`` (from :func:`shard_budget`) tokens unless one document alone is longer.
    Reads ``sizes`` in chunks."""
    out: list[tuple[int, int, int, int]] = []
    first_doc = first_tok = base = 0
    for lo in range(0, len(sizes), chunk):
        ends = np.cumsum(np.asarray(sizes[lo:lo + chunk], np.int64)) + base  # document ends
        while True:
            # documents lo .. lo+fit-1 end within the shard's budget
            fit = int(np.searchsorted(ends, first_tok + shard_tokens, side="right"))
            if fit == len(ends):
                break  # the shard goes on into the next chunk
            end_doc = max(lo + fit, first_doc + 1)  # a document longer than a shard: alone
            end_tok = int(ends[end_doc - 1 - lo]) if end_doc > lo else base
            out.append((first_doc, end_doc, first_tok, end_tok))
            first_doc, first_tok = end_doc, end_tok
        base = int(ends[-1])
    if first_doc < len(sizes):
        out.append((first_doc, len(sizes), first_tok, base))
    return out


def suffix_array(tokens: np.ndarray) -> np.ndarray:
    """The suffix array of ``tokens`` as uint32, by libdivsufsort (pydivsufsort): it sorts
    wider tokens as their big-endian bytes and keeps the suffixes that start on a token, which
    is the order of the token sequences."""
    import pydivsufsort

    if len(tokens) == 0:
        return np.zeros(0, SA_DTYPE)
    if len(tokens) == 1:
        return np.zeros(1, SA_DTYPE)
    return pydivsufsort.divsufsort(np.ascontiguousarray(tokens)).astype(SA_DTYPE)


def index_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / NGRAM_DIR


def data_identity(prefix: str | Path) -> dict:
    """What an index is built from: the data files' sizes and modification times (a rebuilt
    dataset has other ones; hashing a Pile-sized ``.bin`` would take longer than indexing it)."""
    return files_identity([index_path(prefix), *data_files(prefix)])


def files_identity(files) -> dict:
    """``{name: [size, mtime_ns]}``: what tells a file derived from these is still current."""
    return {Path(p).name: [Path(p).stat().st_size, Path(p).stat().st_mtime_ns] for p in files}


@dataclass
class Shard:
    file: str
    first_doc: int
    end_doc: int
    start: int  # first token (global position in the token stream)
    end: int

    def to_json(self) -> dict:
        return dict(self.__dict__)


class SuffixIndex:
    """A finished index of a dataset: ``find(ids)`` gives each shard's suffix-array range,
    ``positions(ids)`` the global token positions, ``count(ids)`` how many."""

    def __init__(self, out_dir: str | Path, data: IndexedDataset):
        self.dir = index_dir(out_dir)
        meta_path = self.dir / NGRAM_META
        if not meta_path.exists():
            raise NotFoundError(f"{out_dir} has no n-gram index (run `pileprep index {out_dir}`)")
        self.meta = atomic.read_json(meta_path)
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise FormatError(f"{meta_path}: not a version {VERSION} {FORMAT} index")
        if self.meta["data"] != data_identity(data.prefix):
            raise NotFoundError(f"the n-gram index in {self.dir} was built from other data files "
                                f"(run `pileprep index {out_dir}` again)")
        self.shards = [Shard(**s) for s in self.meta["shards"]]
        self.last_token = self.meta.get("last_token")  # every document ends with it, or None
        self._tokens = data.scattered()[2]
        self._sa = [FileArray(self.dir / s.file, SA_DTYPE, (s.end - s.start,)) for s in self.shards]
        for s, sa in zip(self.shards, self._sa):
            if sa.path.stat().st_size != (s.end - s.start) * SA_DTYPE.itemsize:
                raise FormatError(f"{sa.path}: {sa.path.stat().st_size} bytes, expected "
                                  f"{(s.end - s.start) * SA_DTYPE.itemsize}")

    @property
    def tokens(self) -> int:
        return self.shards[-1].end if self.shards else 0

    def _prefix(self, shard: Shard, pos: int, m: int) -> list[int]:
        a = shard.start + pos
        return np.asarray(self._tokens[a:min(a + m, shard.end)]).tolist()

    def _bound(self, k: int, q: list[int], upper: bool) -> int:
        """First suffix of shard k whose first len(q) tokens are >= q (> q when ``upper``)."""
        shard, sa, m = self.shards[k], self._sa[k], len(q)
        lo, hi = 0, len(sa)
        while lo < hi:
            mid = (lo + hi) // 2
            head = self._prefix(shard, int(sa[mid]), m)
            if head < q or (upper and head == q):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def find(self, ids) -> list[tuple[int, int, int]]:
        """``(shard, lo, hi)``: the suffix-array rows of each shard whose suffix starts with
        ``ids`` (shards with none left out)."""
        q = [int(i) for i in ids]
        if not q:
            raise ConfigError("the query is empty")
        out = []
        for k in range(len(self.shards)):
            lo = self._bound(k, q, upper=False)
            hi = self._bound(k, q, upper=True) if lo < len(self._sa[k]) else lo
            if hi > lo:
                out.append((k, lo, hi))
        return out

    def count(self, ids) -> int:
        """Occurrences of ``ids`` anywhere in the token stream (within shards)."""
        return sum(hi - lo for _, lo, hi in self.find(ids))

    def positions(self, ids, at_once: int = POSITIONS_AT_ONCE) -> Iterator[np.ndarray]:
        """Global token positions where ``ids`` starts, at most ``at_once`` per array (in
        suffix order, not position order)."""
        for k, lo, hi in self.find(ids):
            for a in range(lo, hi, at_once):
                yield np.asarray(self._sa[k][a:min(hi, a + at_once)], np.int64) + self.shards[k].start


def open_index(out_dir: str | Path, data: IndexedDataset) -> SuffixIndex | None:
    """The build's index, or None when it has none (an outdated one is an error)."""
    if not (index_dir(out_dir) / NGRAM_META).exists():
        return None
    return SuffixIndex(out_dir, data)
