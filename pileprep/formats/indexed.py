"""The Megatron/GPT-NeoX ``MMIDIDX`` indexed dataset: write it in a stream, read it memory-mapped.

``<prefix>.bin`` is every document's tokens back to back in one dtype. ``<prefix>.idx`` is::

    magic    9 bytes  b"MMIDIDX\\x00\\x00"
    version  uint64   1
    dtype    uint8    code (1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 f32, 7 f64, 8 u16)
    count    uint64   number of sequences N
    doc_cnt  uint64   length of the document index D
    sizes    int32[N]   tokens in each sequence
    pointers int64[N]   byte offset of each sequence in .bin
    doc_idx  int64[D]   sequence index where each document starts, plus the end (N)

pileprep writes one sequence per document (as ``preprocess_data.py`` does for the ``text`` key),
so ``doc_idx`` is ``0, 1, ..., N``. See docs/formats.md.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np

from pileprep.core import atomic
from pileprep.core.errors import ConfigError, FormatError, NotFoundError
from pileprep.core.files import data_path, index_path, pieces_path

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER_BYTES = len(MAGIC) + 8 + 1 + 8 + 8
DTYPE_CODES: dict[int, type] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
    6: np.float32, 7: np.float64, 8: np.uint16,
}
_CHUNK = 1 << 20
_PREFETCH_RUNS = 1 << 13  # scattered reads hinted before reading (see FileArray.will_need)
# A FileArray reads a request of more than one row per _DENSE_BYTES of file in blocks of
# _BLOCK_BYTES (see gather): a pread per row costs ~7 us of Python, a block ~0.5 ns a byte.
_DENSE_BYTES = 1 << 14
_BLOCK_BYTES = 1 << 25


def _mapped(path: Path, dtype, count: int, offset: int) -> np.ndarray:
    """A 1-d memory map of ``count`` items at byte ``offset`` (an empty array for none)."""
    if not count:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,))


class FileArray:
    """A 1-d or 2-d array on disk read with ``pread``: ``a[i]``, ``a[lo:hi]``, ``a[indices]``
    and ``a[i, j]`` return numpy arrays, and nothing stays mapped. For scattered reads (the
    rows of one batch) a memory map costs far more resident memory than it reads: the kernel
    maps whole page-cache folios (up to 2 MiB) around every touched item.
    """

    def __init__(self, path: str | Path, dtype, shape: tuple[int, ...], offset: int = 0):
        self.path, self.dtype, self.shape, self.offset = Path(path), np.dtype(dtype), tuple(shape), offset
        self.ndim = len(self.shape)
        self._row = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        self._fd = os.open(self.path, os.O_RDONLY)
        # Reads are scattered rows or exact slices: read-ahead around a row is wasted I/O.
        _advise(self._fd, 0, 0, "POSIX_FADV_RANDOM")

    @classmethod
    def of(cls, array):
        """The same data as a whole memory map (np.memmap or np.load(mmap_mode=...))."""
        if isinstance(getattr(array, "base", None), mmap.mmap) and array.flags.c_contiguous:
            return cls(array.filename, array.dtype, array.shape, array.offset)
        return array  # in memory already, or not a file

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole array, read (for callers that want it all: small files, tests)."""
        whole = self._read(0, len(self))
        return whole.astype(dtype) if dtype is not None else whole

    def _read(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` read straight into a new array (one copy from the page cache)."""
        out = np.empty((hi - lo, *self.shape[1:]), self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < len(view):
            got = _pread_into(self._fd, view[done:], self.offset + lo * self._row + done)
            if got <= 0:
                raise FormatError(f"{self.path.name}: ends before row {hi}")
            done += got
        return out

    def __getitem__(self, key):
        if isinstance(key, tuple):  # a[i, j]: one row, then the column
            return self[key[0]][key[1:]] if len(key) > 1 else self[key[0]]
        if isinstance(key, slice):
            lo, hi, step = key.indices(len(self))
            return self._read(lo, max(lo, hi))[::step] if step != 1 else self._read(lo, max(lo, hi))
        if np.ndim(key) == 0:
            i = int(key) + (len(self) if int(key) < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"index {int(key)} is out of bounds for {len(self)} rows")
            return self._read(i, i + 1)[0]
        idx = np.asarray(key, np.int64)
        if idx.size * _DENSE_BYTES > len(self) * self._row:
            # So many rows that one pass over the file in large reads beats a read per row.
            return gather(self, idx, max(1, _BLOCK_BYTES // self._row))
        unique, back = np.unique(idx, return_inverse=True)
        out = np.empty((len(unique), *self.shape[1:]), self.dtype)
        # Runs of consecutive rows: one read each.
        heads = np.flatnonzero(np.r_[True, np.diff(unique) != 1]).tolist() if len(unique) else []
        runs = list(zip(heads, heads[1:] + [len(unique)]))
        if len(runs) > 1:
            self.will_need(unique[[a for a, _ in runs]], [b - a for a, b in runs])
        for a, b in runs:
            out[a:b] = self._read(int(unique[a]), int(unique[b - 1]) + 1)
        return out[back.reshape(-1)].reshape(*idx.shape, *self.shape[1:])

    def will_need(self, starts, counts) -> None:
        """Hint that rows ``start .. start+count-1`` of each range are about to be read: the
        kernel asks the disk for all of them at once, so on a cold page cache the reads that
        follow wait on the disk together (a deep queue), not one after another; that is what
        makes a batch's few thousand scattered rows cost milliseconds, not seconds. Only for
        requests of a batch's size: on pages already cached each hint costs as much as the read
        itself, and long scans (step ranges) run warm."""
        if len(starts) > _PREFETCH_RUNS:
            return
        for start, count in zip(np.asarray(starts).tolist(), np.asarray(counts).tolist()):
            _advise(self._fd, self.offset + start * self._row, count * self._row, "POSIX_FADV_WILLNEED")


def _advise(fd: int, offset: int, length: int, advice: str) -> None:
    """``posix_fadvise`` where the platform has it (a hint: nothing depends on it)."""
    if hasattr(os, advice):
        os.posix_fadvise(fd, offset, length, getattr(os, advice))


def advise_random(*arrays) -> None:
    """Tell the kernel these memory maps are read at scattered places: without it every page
    fault reads ahead megabytes (1,024 random rows of a schedule array cost 0.8 GB of RSS)."""
    for array in arrays:
        for mm in getattr(array, "maps", [array]):
            base = getattr(mm, "base", None)
            if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_RANDOM"):
                base.madvise(mmap.MADV_RANDOM)


MAP_BUDGET_ENV = "PILEPREP_MAP_BUDGET"
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def mapped_bytes() -> int:
    """Resident file-backed (shared) memory of this process, or 0 where /proc does not say."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[2]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def map_budget() -> int:
    """How much of the page cache a process scanning or searching through memory maps may keep
    mapped before it drops the maps: ``PILEPREP_MAP_BUDGET`` (a size: 4GiB), else a quarter of
    the machine's memory, and inside a Dask worker at most a quarter of its memory limit (the
    nanny counts these pages in the worker's memory). Those pages are clean and the kernel's to
    reclaim; kept mapped, a next access costs no page fault."""
    from dask.utils import parse_bytes

    given = os.environ.get(MAP_BUDGET_ENV)
    if given:
        try:
            return max(1, parse_bytes(given))
        except (ValueError, TypeError):
            raise ConfigError(f"{MAP_BUDGET_ENV} must be a size such as 4GiB, not {given!r}") from None
    try:
        budget = max(1 << 30, os.sysconf("SC_PHYS_PAGES") * PAGE // 4)
    except (ValueError, OSError, AttributeError):
        budget = 4 << 30
    limit = _worker_memory_limit()
    return min(budget, max(1 << 28, limit // 4)) if limit else budget


def _worker_memory_limit() -> int:
    """The memory limit of the Dask worker running this, or 0 (not in a worker, or none)."""
    try:
        from distributed import get_worker

        return int(get_worker().memory_manager.memory_limit or 0)
    except (ImportError, ValueError, AttributeError):
        return 0


def chunks(array: np.ndarray, size: int, stop: int | None = None):
    """``(lo, array[lo:lo+size])`` up to ``stop``, each chunk a copy. For a memory map (one
    made by np.memmap or np.load(mmap_mode=...), not a slice of one) each chunk is mapped on
    its own and unmapped again, so a scan of a file far larger than memory keeps a flat RSS;
    slicing the big map would leave every page it touched resident."""
    stop = len(array) if stop is None else min(stop, len(array))
    for lo in range(0, stop, size):
        yield lo, rows(array, lo, min(lo + size, stop))


def rows(array: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """A copy of ``array[lo:hi]``; for a whole memory map, read through a map of just those
    rows, unmapped at once (see :func:`chunks`)."""
    if hi <= lo:
        return np.asarray(array[lo:lo])
    if isinstance(array, FileArray):
        return array[lo:hi]  # a new array already
    if isinstance(getattr(array, "base", None), mmap.mmap) and array.flags.c_contiguous:
        row = array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
        part = np.memmap(array.filename, dtype=array.dtype, mode="r",
                         offset=array.offset + lo * row, shape=(hi - lo, *array.shape[1:]))
        out = np.array(part)
        del part
        return out
    return np.array(array[lo:hi])


def gather(array, idx: np.ndarray, block: int = 1 << 22) -> np.ndarray:
    """``array[idx]`` for many indices scattered over a large on-disk array, reading the array
    one block of rows at a time (:func:`rows`: a map of that block alone, or one pread) and
    taking from each block the indices that fall in it. A fancy index on the whole memory map would leave
    every page it touched resident (all of them, for a random permutation); this holds one
    block. Costs one pass over the blocks that hold an index: pass many indices at once."""
    idx = np.asarray(idx, np.int64)
    out = np.empty((*idx.shape, *array.shape[1:]), array.dtype)
    if not idx.size:
        return out
    if idx.min() < 0 or idx.max() >= len(array):
        raise IndexError(f"an index outside 0..{len(array) - 1}")
    which = idx.reshape(-1) // block
    # Few blocks: a small key, so numpy's stable sort is a radix sort (linear time).
    key = which.astype(np.uint16) if len(array) // block < (1 << 16) else which
    order = np.argsort(key, kind="stable")
    del key
    bounds = np.concatenate([[0], np.cumsum(np.bincount(which))])
    del which
    flat, dest = idx.reshape(-1), out.reshape(-1, *array.shape[1:])
    for j in np.flatnonzero(np.diff(bounds)).tolist():
        at = order[bounds[j]:bounds[j + 1]]
        lo = j * block
        dest[at] = rows(array, lo, min(lo + block, len(array)))[flat[at] - lo]
    return out


def best_fitting_dtype(vocab_size: int | None) -> type:
    """GPT-NeoX's choice: 2-byte tokens below 65500 entries, else 4-byte signed."""
    return np.uint16 if vocab_size is not None and vocab_size < 65500 else np.int32


def dtype_code(dtype) -> int:
    dt = np.dtype(dtype)
    for code, candidate in DTYPE_CODES.items():
        if np.dtype(candidate) == dt:
            return code
    raise FormatError(f"dtype {dt} has no MMIDIDX code")


class Index:
    """A parsed ``.idx``: its dtype and the three arrays, as views of a memory map.

    Reading is lazy: only the header is read here, and an array's pages are read when touched,
    so opening the index of the Pile (210 M documents, ~4 GB) costs nothing.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            header = f.read(HEADER_BYTES)
        name = self.path.name
        if len(header) < HEADER_BYTES or header[:len(MAGIC)] != MAGIC:
            raise FormatError(f"{name}: not an MMIDIDX index (bad magic or too short)")
        version, code, count, doc_count = struct.unpack_from("<QBQQ", header, len(MAGIC))
        if version != VERSION:
            raise FormatError(f"{name}: version {version}, expected {VERSION}")
        if code not in DTYPE_CODES:
            raise FormatError(f"{name}: unknown dtype code {code}")
        self.dtype = np.dtype(DTYPE_CODES[code])
        size = self.path.stat().st_size
        expected = HEADER_BYTES + count * 4 + count * 8 + doc_count * 8
        if size != expected:
            raise FormatError(f"{name}: {size} bytes, but its header ({count} sequences, "
                              f"{doc_count} document index entries) implies {expected}")
        self.sizes = _mapped(self.path, np.int32, count, HEADER_BYTES)
        self.pointers = _mapped(self.path, np.int64, count, HEADER_BYTES + count * 4)
        self.doc_idx = _mapped(self.path, np.int64, doc_count, HEADER_BYTES + count * 12)

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def data_bytes(self) -> int:
        """How long the ``.bin`` must be: the end of the last sequence."""
        if not len(self.sizes):
            return 0
        return int(self.pointers[-1]) + int(self.sizes[-1]) * self.dtype.itemsize


class _HashingWriter:
    def __init__(self, f: BinaryIO):
        self.f, self.sha256, self.bytes = f, hashlib.sha256(), 0

    def write(self, data) -> None:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.f.write(view)
        self.bytes += len(view)


def write_index(f: BinaryIO, dtype, count: int,
                size_chunks: Callable[[], Iterable[np.ndarray]]) -> str:
    """Stream an ``.idx`` for ``count`` one-sequence documents; return its sha256.

    ``size_chunks`` is called twice (sizes, then pointers), so the sizes never have to be held
    in memory at once: at Pile scale they alone are close to a gigabyte.
    """
    out = _HashingWriter(f)
    itemsize = np.dtype(dtype).itemsize
    out.write(MAGIC + struct.pack("<Q", VERSION) + struct.pack("<B", dtype_code(dtype)))
    out.write(struct.pack("<Q", count) + struct.pack("<Q", count + 1))
    seen = 0
    for chunk in size_chunks():
        out.write(np.ascontiguousarray(chunk, dtype=np.int32))
        seen += len(chunk)
    if seen != count:
        raise FormatError(f"expected {count} sizes, got {seen}")
    offset = 0
    for chunk in size_chunks():
        ends = np.cumsum(chunk, dtype=np.int64) * itemsize + offset
        starts = np.empty_like(ends)
        starts[0:1] = offset
        starts[1:] = ends[:-1]
        out.write(starts)
        if len(ends):
            offset = int(ends[-1])
    for start in range(0, count + 1, _CHUNK):
        out.write(np.arange(start, min(count + 1, start + _CHUNK), dtype=np.int64))
    return out.sha256.hexdigest()


def copy_concat(sources: Iterable[str | Path], f: BinaryIO) -> str:
    """Append the files to ``f`` in order, streaming; return the sha256 of what was written."""
    out = _HashingWriter(f)
    buf = bytearray(8 * _CHUNK)
    view = memoryview(buf)
    for src in sources:
        with open(src, "rb") as inp:
            while n := inp.readinto(buf):
                out.write(view[:n])
    return out.sha256.hexdigest()


class JoinedTokens:
    """The token stream of a ``.bin`` published in pieces, read in place: ``tokens[a:b]`` like
    an array (a view when the range lies in one piece, a copy across a boundary).

    Pieces are cut at byte counts (Pythia's: 5,000,000,000 bytes), not at documents, so a
    document may straddle two of them; each piece's length must be a whole number of tokens.
    """

    def __init__(self, paths: list[Path], dtype: np.dtype, pread: bool = False):
        self.dtype = np.dtype(dtype)
        sizes = [Path(p).stat().st_size for p in paths]
        bad = [Path(p).name for p, n in zip(paths, sizes) if n % self.dtype.itemsize]
        if bad:
            raise FormatError(f"{bad[0]}: its length is not a whole number of {self.dtype} tokens")
        self.maps = [FileArray(p, self.dtype, (n // self.dtype.itemsize,)) if pread
                     else np.memmap(p, dtype=self.dtype, mode="r") for p, n in zip(paths, sizes) if n]
        lengths = np.array([len(m) for m in self.maps], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)])
        self.shape = (int(self.starts[-1]),)

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, idx: np.ndarray) -> np.ndarray:
        """The tokens at positions ``idx`` (any shape), each from its piece."""
        idx = np.asarray(idx, np.int64)
        out = np.empty(idx.shape, self.dtype)
        piece = np.searchsorted(self.starts, idx, side="right") - 1
        for i in np.unique(piece).tolist():
            at = piece == i
            out[at] = self.maps[i][idx[at] - self.starts[i]]
        return out

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("pieced token streams are read by contiguous slices")
        a, b, _ = key.indices(len(self))
        if b <= a:
            return np.zeros(0, self.dtype)
        first = int(np.searchsorted(self.starts, a, side="right")) - 1
        last = int(np.searchsorted(self.starts, b - 1, side="right")) - 1
        parts = [self.maps[i][max(a, int(self.starts[i])) - int(self.starts[i]):
                              min(b, int(self.starts[i + 1])) - int(self.starts[i])]
                 for i in range(first, last + 1)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def read_range(fds: list[int], starts: np.ndarray, offset: int, nbytes: int, dtype) -> np.ndarray:
    """``nbytes`` at byte ``offset`` of the concatenation of the open files ``fds`` (whose
    first bytes sit at ``starts``), with ``pread``: no memory map."""
    out = bytearray(nbytes)
    view, done = memoryview(out), 0
    while done < nbytes:
        pos = offset + done
        f = int(np.searchsorted(starts, pos, side="right")) - 1
        got = _pread_into(fds[f], view[done:], pos - int(starts[f])) if f < len(fds) else 0
        if got <= 0:
            raise FormatError(f"data ends at byte {pos}, the index says {offset + nbytes}")
        done += got
    return np.frombuffer(out, dtype=dtype)


def _pread_into(fd: int, view, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)
    view[:len(data)] = data
    return len(data)


def data_files(prefix: str | Path) -> list[Path]:
    """The files holding the dataset's tokens: ``<prefix>.bin``, or the pieces an adopted
    dataset lists in ``<prefix>.bin.pieces.json`` (read in place, never joined)."""
    listed = pieces_path(prefix)
    if not data_path(prefix).exists() and listed.exists():
        return [Path(p["path"]) for p in atomic.read_json(listed)["pieces"]]
    return [data_path(prefix)]


class IndexedDataset:
    """Read-only, memory-mapped view of ``<prefix>.bin/.idx``. ``ds[i]`` is document i's tokens."""

    def __init__(self, prefix: str | Path):
        self.prefix = Path(prefix)
        self.index = Index(index_path(prefix))
        self.dtype = self.index.dtype
        self.sizes, self.pointers, self.doc_idx = self.index.sizes, self.index.pointers, self.index.doc_idx
        files = data_files(prefix)
        missing = [p for p in files if not p.exists()]
        if missing:
            raise NotFoundError(f"{missing[0]}: the dataset's data file is missing")
        if len(files) > 1:
            self.tokens = JoinedTokens(files, self.dtype)
        else:
            self.tokens = (np.memmap(files[0], dtype=self.dtype, mode="r")
                           if files[0].stat().st_size else np.zeros(0, self.dtype))

    def scattered(self) -> tuple:
        """``(sizes, pointers, tokens)`` for scattered reads (training samples) with pread:
        a batch's reads leave nothing mapped (see :class:`FileArray`)."""
        files = data_files(self.prefix)
        if len(files) > 1:
            tokens = JoinedTokens(files, self.dtype, pread=True)
        elif len(self.tokens):
            tokens = FileArray(files[0], self.dtype, (len(self.tokens),))
        else:
            tokens = self.tokens
        return FileArray.of(self.sizes), FileArray.of(self.pointers), tokens

    def advise_random(self) -> None:
        """Tell the kernel reads will be scattered (training samples), so a page fault does not
        read megabytes around it; sequential scans should not call this."""
        advise_random(self.tokens, self.sizes, self.pointers)

    def __len__(self) -> int:
        return len(self.sizes)

    def read(self, i: int) -> np.ndarray:
        """Document i's tokens, read with ``pread`` into a new array: unlike the memory-mapped
        ``ds[i]``, a pass over many documents leaves no mapped pages behind (a process that reads
        the whole dataset keeps a flat RSS)."""
        return self._read_bytes(int(self.pointers[i]), int(self.sizes[i]) * self.dtype.itemsize)

    def read_tokens(self, start: int, end: int) -> np.ndarray:
        """Tokens ``start .. end-1`` of the token stream (across pieces too), read like
        :meth:`read`: one new array of exactly that range, nothing mapped, and an error when
        the data files end before it (a slice of ``scattered()`` would come back short)."""
        item = self.dtype.itemsize
        return self._read_bytes(start * item, (end - start) * item)

    def _read_bytes(self, offset: int, nbytes: int) -> np.ndarray:
        return read_range(self._files(), self._file_starts(), offset, nbytes, self.dtype)

    def _files(self) -> list:
        if not hasattr(self, "_fds"):
            self._fds = [os.open(p, os.O_RDONLY) for p in data_files(self.prefix)]
        return self._fds

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", []):
            os.close(fd)

    def _file_starts(self) -> np.ndarray:
        if not hasattr(self, "_starts"):
            sizes = [os.fstat(fd).st_size for fd in self._files()]
            self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        return self._starts

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.pointers[i]) // self.dtype.itemsize
        return self.tokens[start:start + int(self.sizes[i])]

    def get(self, i: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens ``offset:offset+length`` of document i, as a view (no copy)."""
        doc = self[i]
        end = len(doc) if length is None else offset + length
        return doc[offset:end]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]
