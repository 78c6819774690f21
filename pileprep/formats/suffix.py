"""The suffix-array index of a dataset's token stream: its files, its construction per shard, and
lookups (which token positions hold a sequence of ids, and how many), many queries at once.

The ``.bin`` is cut into shards of whole documents (at most ``shard_tokens`` tokens each, a
document longer than that is a shard alone). A shard's suffix array is the permutation of its
token positions ``0 .. n-1`` sorted by the token sequence that starts there and runs to the
shard's end (a suffix that is a prefix of another sorts first). Version 2 keeps every shard's
array in one file, ``OUT_DIR/ngram/suffixes.sa``, as little-endian uint32 positions relative to
the shard's first token, at the rows of the shard's own tokens: row r belongs to the shard whose
tokens hold position r, so the file is exactly 4 bytes per token and needs no offsets. Every
``KEY_STRIDE``-th row of each shard is sampled into ``keys.npy``: ``shard << 48 | the suffix's
first tokens packed`` (uint64, sorted, as the rows are). ``index.json`` lists the shards and what
the index was built from; it is written last, so an index without it is unfinished. The tokens
are not copied: lookups read the dataset's own ``.bin``. See docs/formats.md.

Every occurrence of a sequence inside a document lies inside one shard, so the rows found in
every shard are all of them. A lookup (:meth:`SuffixIndex.ranges`) narrows each shard's rows with
one ``searchsorted`` over the keys, then runs the binary searches of every (query, shard) pair
at once, as numpy gathers from memory maps of the suffix file and the ``.bin``: its cost is
~log2(key stride) gathers of one row per pair, not a Python loop per shard and probe (version 1:
a file per shard, probed with pread one at a time, 2-9 s a query at the Pile's 2,235 shards).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pileprep.core import atomic
from pileprep.core.errors import ConfigError, FormatError, NotFoundError
from pileprep.core.files import NGRAM_DIR, NGRAM_KEYS, NGRAM_META, NGRAM_SUFFIXES
from pileprep.formats.indexed import (IndexedDataset, JoinedTokens, advise_random, data_files,
                                      index_path, map_budget, mapped_bytes)

FORMAT = "pileprep-suffix-array"
VERSION = 2  # 1: a file per shard, no keys (refused: rebuild)
SA_DTYPE = np.dtype("<u4")
# A shard's bytes stay below this: pydivsufsort sorts them (2n for 2-byte tokens) with int32
# positions, and with int64 ones (twice the memory) above.
SORT_BYTES = 1 << 31
DEFAULT_SHARD_TOKENS = 1 << 27  # ~2.7 GB of working memory per worker while it is sorted
POSITIONS_AT_ONCE = 1 << 20  # positions read at once from a suffix-array range
KEY_STRIDE = 1 << 12  # rows per key: 73 M keys (586 MB on disk) for the Pile's 300 B tokens
KEY_BITS = 48  # of a key's 64: the packed tokens; the 16 above them are the shard
# (query, shard) pairs x query tokens searched at once: bounds the gathers' arrays (lanes x m
# int64 each, a few of them: ~50 MB)
TOKENS_AT_ONCE = 1 << 20
# Each gathered row faults in the page-cache folio around it (up to 2 MiB) as resident, clean,
# file-backed memory of this process; kept mapped, the next lookups near it cost no fault. The
# maps are dropped, and that memory with them, past ``indexed.map_budget()`` (checked every
# CHECK_GATHERS rows).
CHECK_GATHERS = 1 << 15
COMPARE_BLOCK = 4  # query tokens compared per gather (a lane reads on only while still equal)


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


def key_tokens(dtype) -> int:
    """Tokens packed in a key: as many as fit in ``KEY_BITS`` (3 for uint16 tokens)."""
    return max(1, KEY_BITS // (8 * np.dtype(dtype).itemsize))


def pack_keys(heads: np.ndarray, dtype, fill: int = 0) -> np.ndarray:
    """``(n, K)`` first tokens of suffixes (``-1`` past a shard's end, read as ``fill``) as one
    uint64 each, first token highest: the keys sort as the suffixes do (a suffix that ends
    sorts first, as 0 padding does; ``fill`` = the largest token gives a query's upper key)."""
    bits = 8 * np.dtype(dtype).itemsize
    out = np.zeros(len(heads), np.uint64)
    for j in range(heads.shape[1]):
        col = np.where(heads[:, j] < 0, fill, heads[:, j]).astype(np.uint64)
        out = (out << np.uint64(bits)) | col
    return out


def shard_keys(shard: int, sa: np.ndarray, tokens: np.ndarray, stride: int = KEY_STRIDE) -> np.ndarray:
    """The keys of every ``stride``-th row of one shard's suffix array (``tokens``: the
    shard's own)."""
    if shard >= 1 << (64 - KEY_BITS):
        raise ConfigError(f"an index holds at most {1 << (64 - KEY_BITS):,} shards; "
                          "raise --shard-tokens")
    K = key_tokens(tokens.dtype)
    at = np.asarray(sa[::stride], np.int64)[:, None] + np.arange(K)
    heads = np.where(at < len(tokens), tokens[np.minimum(at, len(tokens) - 1)].astype(np.int64), -1)
    return (np.uint64(shard) << np.uint64(KEY_BITS)) | pack_keys(heads, tokens.dtype)


@dataclass
class Shard:
    first_doc: int
    end_doc: int
    start: int  # first token (global position in the token stream), and first row
    end: int

    def to_json(self) -> dict:
        return dict(self.__dict__)


def take(tokens, idx: np.ndarray) -> np.ndarray:
    """``tokens[idx]`` for a memory-mapped ``.bin`` or one in pieces."""
    if isinstance(tokens, np.ndarray):
        return tokens[idx]
    return tokens.take(idx)


def _compare(tokens, start: np.ndarray, end: np.ndarray, q: np.ndarray, which: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Per lane, whether the suffix at ``start`` (cut at ``end``) is below its query
    ``q[which]``, and whether it starts with it. Tokens are read ``COMPARE_BLOCK`` columns at a
    time, and only for the lanes still equal so far: most differ within the first block."""
    n, m = len(start), q.shape[1]
    below = np.zeros(n, bool)
    open_ = np.arange(n)  # lanes equal so far
    for c in range(0, m, COMPARE_BLOCK):
        cols = np.arange(c, min(m, c + COMPARE_BLOCK))
        at = start[open_, None] + cols
        inside = at < end[open_, None]
        got = take(tokens, np.minimum(at, end[open_, None] - 1)).astype(np.int64)
        want = q[which[open_]][:, cols]
        differ = ~inside | (got != want)
        decided = differ.any(axis=1)
        j = differ.argmax(axis=1)
        r = np.arange(len(open_))
        below[open_[decided]] = (~inside[r, j] | (got[r, j] < want[r, j]))[decided]
        open_ = open_[~decided]
        if not len(open_):
            break
    same = np.zeros(n, bool)
    same[open_] = True
    return below, same


class SuffixIndex:
    """A finished index of a dataset: ``ranges(queries)`` gives each query's suffix-array rows
    per shard, ``counts(queries)`` how many, ``positions(ids)`` the global token positions."""

    def __init__(self, out_dir: str | Path, data: IndexedDataset):
        self.dir = index_dir(out_dir)
        meta_path = self.dir / NGRAM_META
        if not meta_path.exists():
            raise NotFoundError(f"{out_dir} has no n-gram index (run `pileprep index {out_dir}`)")
        self.meta = atomic.read_json(meta_path)
        if self.meta.get("format") != FORMAT:
            raise FormatError(f"{meta_path}: not a {FORMAT} index")
        if self.meta.get("version") != VERSION:
            raise FormatError(f"the n-gram index in {self.dir} is in format version "
                              f"{self.meta.get('version')}, this pileprep reads version {VERSION}: "
                              f"rebuild it with `pileprep index {out_dir}`")
        if self.meta["data"] != data_identity(data.prefix):
            raise NotFoundError(f"the n-gram index in {self.dir} was built from other data files "
                                f"(run `pileprep index {out_dir}` again)")
        self.shards = [Shard(**s) for s in self.meta["shards"]]
        self.last_token = self.meta.get("last_token")  # every document ends with it, or None
        self.dtype = np.dtype(data.dtype)
        self._data = data
        self._bounds = np.array([[s.start, s.end] for s in self.shards], np.int64).reshape(-1, 2)
        self.stride = int(self.meta["key_stride"])
        n_keys = -(-(self._bounds[:, 1] - self._bounds[:, 0]) // self.stride)
        self._first_key = np.concatenate([[0], np.cumsum(n_keys)])
        self._check_files(out_dir, int(self._first_key[-1]))
        self._maps = None
        self._budget = map_budget()  # a bad PILEPREP_MAP_BUDGET is refused here, before work
        self._gathered = 0
        self.gathered_total = 0  # rows read by lookups so far (benchmarks report it)

    @property
    def tokens(self) -> int:
        return self.shards[-1].end if self.shards else 0

    def _check_files(self, out_dir, keys: int) -> None:
        """The suffix file and the keys are there, of the sizes ``index.json`` implies."""
        want = {NGRAM_SUFFIXES: self.tokens * SA_DTYPE.itemsize, NGRAM_KEYS: keys}
        for name, size in want.items():
            path = self.dir / name
            if not path.exists():
                raise FormatError(f"{path} is missing: rebuild with `pileprep index {out_dir}`")
            got = (len(np.load(path, mmap_mode="r")) if name == NGRAM_KEYS
                   else path.stat().st_size)
            if got != size:
                raise FormatError(f"{path}: {got:,} {'keys' if name == NGRAM_KEYS else 'bytes'}, "
                                  f"expected {size:,}: rebuild with `pileprep index {out_dir}`")

    def _open(self):
        """``(suffixes, keys, tokens)`` memory maps, made again when the pages they hold pass
        the budget (:func:`map_budget`), so a long batch of lookups does not keep every page it
        touched."""
        if self._maps is not None and self._gathered >= CHECK_GATHERS:
            self._gathered = 0
            if mapped_bytes() > self._budget:
                self._maps = None  # the old maps go before the new are made
        if self._maps is None:
            sa = np.memmap(self.dir / NGRAM_SUFFIXES, SA_DTYPE, "r") if self.tokens else np.zeros(0, SA_DTYPE)
            keys = np.load(self.dir / NGRAM_KEYS, mmap_mode="r")
            files = data_files(self._data.prefix)
            tokens = (JoinedTokens(files, self.dtype) if len(files) > 1 else
                      np.memmap(files[0], self.dtype, "r") if self.tokens else np.zeros(0, self.dtype))
            advise_random(sa, keys, tokens)
            self._maps = (sa, keys, tokens)
        return self._maps

    # -- lookups -------------------------------------------------------------------------------

    def ranges(self, queries) -> list[np.ndarray]:
        """For each query, an array of ``(shard, lo, hi)`` rows: the rows ``lo .. hi-1`` of
        ``suffixes.sa`` (global rows) whose suffix starts with it, per shard holding it."""
        queries = [[int(t) for t in q] for q in queries]
        if any(not q for q in queries):
            raise ConfigError("a query is empty")
        out = [np.zeros((0, 3), np.int64)] * len(queries)
        S = max(1, len(self.shards))
        top = (1 << (8 * self.dtype.itemsize)) - 1
        by_length: dict[int, list[int]] = {}
        for i, q in enumerate(queries):
            if min(q) >= 0 and max(q) <= top:  # else no token of this dtype holds it
                by_length.setdefault(len(q), []).append(i)
        for m, which in by_length.items():
            per = max(1, TOKENS_AT_ONCE // (S * m))
            for a in range(0, len(which), per):
                group = which[a:a + per]
                self._find_group(np.array([queries[i] for i in group], np.int64), group, out)
        return out

    def _find_group(self, q: np.ndarray, group: list[int], out: list) -> None:
        """The rows of queries ``q`` (all of one length), every shard of each at once."""
        S = len(self.shards)
        if not S or not self.tokens:
            return
        keys = self._open()[1]
        lane_q = np.repeat(np.arange(len(q)), S)
        shard = np.tile(np.arange(S), len(q))
        (lo1, hi1), (lo2, hi2) = self._narrow(q, lane_q, shard, keys)
        base, end = self._bounds[shard, 0], self._bounds[shard, 1]
        first = self._search(q, lane_q, base, end, lo1, hi1, upper=False)
        last = self._search(q, lane_q, base, end, np.maximum(lo2, first), hi2, upper=True)
        found = np.flatnonzero(last > first)  # lanes in query order, then shard order
        rows = np.stack([shard[found], first[found], last[found]], axis=1)
        cuts = np.searchsorted(lane_q[found], np.arange(len(group) + 1))
        for i in np.flatnonzero(np.diff(cuts)).tolist():
            out[group[i]] = rows[cuts[i]:cuts[i + 1]]

    def _narrow(self, q, lane_q, shard, keys):
        """Per lane, rows known to hold the lower bound and rows known to hold the upper one,
        from the keys (each the suffix's first K tokens, 0 past its end). With ``lo`` the
        query's first K tokens padded with 0 and ``hi`` padded with the largest token, a key
        ``< lo`` is a suffix below the query, a key ``> lo`` one at or above it, and a key
        ``> hi`` one above every suffix starting with it; when the query has at most K tokens
        (the key holds it all) a key ``<= hi`` is one below that upper bound. So a query of at
        most K tokens gets both bounds within about a stride of rows, a longer one within the
        rows of the keys equal to its first K tokens."""
        K = key_tokens(self.dtype)
        m = q.shape[1]
        heads = np.full((len(q), K), -1, np.int64)
        heads[:, :min(K, m)] = q[:, :K]
        top = (1 << (8 * self.dtype.itemsize)) - 1
        tag = shard.astype(np.uint64) << np.uint64(KEY_BITS)
        k_lo = tag | pack_keys(heads, self.dtype)[lane_q]
        k_hi = tag | pack_keys(heads, self.dtype, top)[lane_q]
        base = self._first_key[shard]
        rank = lambda key, side: np.searchsorted(keys, key, side) - base  # noqa: E731
        below_lo, atmost_hi = rank(k_lo, "left"), rank(k_hi, "right")
        ahead_lo = rank(k_lo, "right")  # keys > lo: suffixes >= the query (a pad 0 is EOD's id too)
        below_hi = atmost_hi if m <= K else rank(k_hi, "left")  # keys known below the upper bound
        after = lambda k: self._row(shard, k - 1) + (k > 0)  # noqa: E731 - past key k-1
        return (after(below_lo), self._row(shard, ahead_lo)), (after(below_hi), self._row(shard, atmost_hi))

    def _row(self, shard: np.ndarray, k: np.ndarray) -> np.ndarray:
        """The row of each shard's key k (its start for k < 0, its end past the last key)."""
        start, end = self._bounds[shard, 0], self._bounds[shard, 1]
        return np.clip(start + k * self.stride, start, end)

    def _search(self, q, lane_q, base, end, lo, hi, upper: bool) -> np.ndarray:
        """Per lane, the first row in ``lo .. hi`` whose suffix is >= its query (> it and not
        starting with it, when ``upper``): one binary search per lane, all lanes a step at once."""
        lo, hi = lo.copy(), hi.copy()
        live = np.flatnonzero(lo < hi)
        while len(live):
            sa, _, tokens = self._open()  # made again now and then: see map_budget
            mid = (lo[live] + hi[live]) >> 1
            start = sa[mid].astype(np.int64) + base[live]
            below, same = _compare(tokens, start, end[live], q, lane_q[live])
            right = below | (same if upper else False)
            lo[live[right]] = mid[right] + 1
            hi[live[~right]] = mid[~right]
            live = live[lo[live] < hi[live]]
            self._gathered += len(mid)
            self.gathered_total += len(mid)
        return lo

    def counts(self, queries) -> np.ndarray:
        """Occurrences of each query anywhere in the token stream (within shards)."""
        return np.array([int((r[:, 2] - r[:, 1]).sum()) for r in self.ranges(queries)], np.int64)

    def count(self, ids) -> int:
        return int(self.counts([ids])[0])

    def positions(self, ids, at_once: int = POSITIONS_AT_ONCE) -> Iterator[np.ndarray]:
        """Global token positions where ``ids`` starts, at most ``at_once`` per array (in
        suffix order, not position order)."""
        return self.positions_in(self.ranges([ids])[0], at_once)

    def positions_of_many(self, ranges: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The positions of several queries' (small) ``ranges`` in one gather: all of them, in
        query order, and how many each query has."""
        counts = np.array([int((r[:, 2] - r[:, 1]).sum()) for r in ranges], np.int64)
        rows = np.concatenate([np.zeros((0, 3), np.int64), *ranges])
        n = rows[:, 2] - rows[:, 1]
        if not n.sum():
            return np.zeros(0, np.int64), counts
        at = np.repeat(rows[:, 1] - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
        start = np.repeat(self._bounds[rows[:, 0], 0], n)
        return np.asarray(self._open()[0][at], np.int64) + start, counts

    def positions_in(self, ranges, at_once: int = POSITIONS_AT_ONCE) -> Iterator[np.ndarray]:
        """The global token positions of one query's ``ranges`` (from :meth:`ranges`)."""
        sa = self._open()[0]
        for k, lo, hi in np.asarray(ranges).tolist():
            for a in range(lo, hi, at_once):
                yield np.asarray(sa[a:min(hi, a + at_once)], np.int64) + self.shards[k].start


def open_index(out_dir: str | Path, data: IndexedDataset) -> SuffixIndex | None:
    """The build's index, or None when it has none (an outdated one is an error)."""
    if not (index_dir(out_dir) / NGRAM_META).exists():
        return None
    return SuffixIndex(out_dir, data)
