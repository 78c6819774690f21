"""Apply a dedup result: the table of removed documents, and token parts without them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pileprep.core import atomic
from pileprep.core.errors import IntegrityError, PilePrepError
from pileprep.formats import provenance
from pileprep.core.files import DUPLICATES
from pileprep.formats.parts import Partition, TokenPart, numpy_of, read_parquet
from pileprep.dedup import steps
from pileprep.dedup.result import DroppedPart

TABLE = DUPLICATES
TABLE_SCHEMA = pa.schema([
    ("source", pa.string()), ("line", pa.int64()), ("pile_set_name", pa.string()),
    ("kept_source", pa.string()), ("kept_line", pa.int64()),
    ("similarity", pa.float32()), ("direct", pa.bool_()),
])


def rows_by_partition(removed: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """Row numbers, within each partition, of the removed documents (sorted by gid: each
    partition's are one slice, found by bisection; not one comparison of every removed gid per
    partition, 70 M x 25,000 at the Pile's size)."""
    gids = removed["gid"]
    bounds = np.searchsorted(gids, np.append(offsets, np.iinfo(np.int64).max))
    return [gids[bounds[i]:bounds[i + 1]] - offsets[i] for i in range(len(offsets))]


def _codes(names: list[str], table: dict[str, int]) -> np.ndarray:
    """Each name's number in ``table``, adding the new ones."""
    return np.array([table.setdefault(n, len(table)) for n in names], np.int32)


def _lookup(gids: np.ndarray, offsets: np.ndarray, parts: Sequence[Partition],
            sig_paths: Sequence[Path]) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, list[str]]:
    """Source, line and subset of each gid, reading only the partitions that hold one: sources
    and subsets as numbers into the name lists returned, so memory is ~16 bytes per gid (as
    Python strings, ~150: 22 GiB for the Pile's 70 M removed documents and their kept ones)."""
    part = steps.part_of(gids, offsets)
    source_names: dict[str, int] = {}
    source = _codes([p.source for p in parts], source_names)[part]
    lines = np.zeros(len(gids), np.int64)
    subsets = np.zeros(len(gids), np.int32)
    subset_names: dict[str, int] = {}
    order = np.argsort(part, kind="stable")  # the gids of each partition, one slice each
    held = part[order]
    for i in np.unique(held):
        sel = order[np.searchsorted(held, i):np.searchsorted(held, i, side="right")]
        t = read_parquet(sig_paths[i], ["line", "pile_set_name"])
        local = gids[sel] - offsets[i]
        lines[sel] = numpy_of(t.column("line"))[local]
        names = t.column("pile_set_name").combine_chunks().dictionary_encode()
        subsets[sel] = _codes(names.dictionary.to_pylist(), subset_names)[
            numpy_of(names.indices)[local]]
    return source, list(source_names), lines, subsets, list(subset_names)


def _strings(codes: np.ndarray, names: list[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()),
                                          pa.array(names, pa.string())).cast(pa.string())


def write_table(removed: np.ndarray, offsets: np.ndarray, parts: Sequence[Partition],
                sig_paths: Sequence[Path], out_path: Path) -> str:
    """Write the removed-documents table (in ``(source, line)`` order); return its sha256.

    Written a row group at a time, each group's strings made only then: the same bytes as one
    ``pq.write_table`` of the whole table (tested), in a driver holding numbers, not strings."""
    # One pass over the partitions for both ends: each signature file is read once.
    n = len(removed)
    source, source_names, lines, subsets, subset_names = _lookup(
        np.concatenate([removed["gid"], removed["kept"]]), offsets, parts, sig_paths)

    def rows(a: int, b: int) -> pa.Table:
        return pa.table([_strings(source[a:b], source_names), lines[a:b],
                         _strings(subsets[a:b], subset_names),
                         _strings(source[n + a:n + b], source_names), lines[n + a:n + b],
                         removed["sim"][a:b], removed["direct"][a:b]], schema=TABLE_SCHEMA)

    with atomic.atomic_path(out_path) as tmp:
        if n <= provenance.ROW_GROUP:
            pq.write_table(rows(0, n), tmp, compression="zstd", row_group_size=provenance.ROW_GROUP)
        else:
            with pq.ParquetWriter(tmp, TABLE_SCHEMA, compression="zstd") as writer:
                for a in range(0, n, provenance.ROW_GROUP):
                    writer.write_table(rows(a, min(a + provenance.ROW_GROUP, n)),
                                       row_group_size=provenance.ROW_GROUP)
    return atomic.sha256_file(out_path)


def drop_documents(part: TokenPart, drop: np.ndarray, out_dir: str, sync: bool = True
                   ) -> tuple[TokenPart, dict, np.ndarray]:
    """``part`` without the documents at rows ``drop``: the part as packed (its provenance
    written to ``out_dir``, synced unless ``sync`` is false; ``bin`` stays the source part's,
    whose kept tokens :func:`kept_blocks` reads), the documents, tokens and text bytes removed
    per subset, and the tokens of every document of the part.
    """
    stem = Path(part.bin).name.removesuffix(".bin")
    prov = read_parquet(part.prov)
    sizes = numpy_of(prov.column("tokens")).astype(np.int64)
    keep = np.ones(len(sizes), bool)
    keep[np.asarray(drop, np.int64)] = False
    kept_prov = prov.filter(pa.array(keep))
    prov_path = Path(out_dir) / f"{stem}.prov.parquet"
    with atomic.atomic_path(prov_path, sync) as tmp:
        pq.write_table(kept_prov, tmp)
    kept_sizes = sizes[keep]
    new = TokenPart(part.bin, str(prov_path), int(keep.sum()), int(kept_sizes.sum()),
                    int(numpy_of(kept_prov.column("bytes")).sum()), part.shard_sha256,
                    provenance.subset_totals(kept_prov))
    return new, provenance.subset_totals(prov.filter(pa.array(~keep))), sizes


def drop_part(part: TokenPart, drop: list[int], out_dir: str, dtype: str, sync: bool = True
              ) -> tuple[DroppedPart, np.ndarray]:
    """One part's documents less the removed ones (see :func:`drop_documents`), and the
    tokens of each of its documents."""
    packed, removed, sizes = drop_documents(part, np.asarray(drop, np.int64), out_dir, sync)
    return DroppedPart(packed, removed, packed.tokens * np.dtype(dtype).itemsize), sizes


def drop_task(part: TokenPart, drop: list[int], out_dir: str, dtype: str) -> DroppedPart:
    """:func:`drop_part` as a task: provenance only (the tokens are written by
    :func:`write_kept_task` once every part's kept size, so its place, is known)."""
    return drop_part(part, drop, out_dir, dtype)[0]


def kept_runs(sizes: np.ndarray, drop: np.ndarray, itemsize: int) -> tuple[np.ndarray, np.ndarray]:
    """Byte ranges ``(starts, lengths)`` of a part's ``.bin`` that hold kept documents, each run
    of consecutive kept documents as one range, in order."""
    ends = np.cumsum(np.asarray(sizes, np.int64)) * itemsize
    starts = ends - np.asarray(sizes, np.int64) * itemsize
    keep = np.ones(len(ends), bool)
    keep[np.asarray(drop, np.int64)] = False
    if not keep.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # a run starts at a kept document after a removed one (or the first) and ends before the next removed
    edge = np.diff(np.concatenate([[0], keep.astype(np.int8), [0]]))
    first, stop = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
    return starts[first], ends[stop - 1] - starts[first]


_COPY = 8 << 20  # bytes per read and write: a task's memory does not grow with the part


def kept_blocks(bin_path: str, sizes: np.ndarray, drop: list[int], dtype: str,
                nbytes: int | None = None) -> Iterator[bytes]:
    """The kept documents' tokens of one part (whose documents have ``sizes`` tokens), in
    order, in blocks of at most ``_COPY`` bytes; ``nbytes``: what the caller expects them to
    add up to (a range it gave)."""
    starts, lengths = kept_runs(sizes, drop, np.dtype(dtype).itemsize)
    if nbytes is not None and int(lengths.sum()) != nbytes:  # a driver bug
        raise PilePrepError(f"{bin_path}: {int(lengths.sum())} kept bytes, a range of {nbytes}")
    fd = os.open(bin_path, os.O_RDONLY)
    try:
        for start, length in zip(starts.tolist(), lengths.tolist()):
            for k in range(start, start + length, _COPY):
                want = min(_COPY, start + length - k)
                block = os.pread(fd, want, k)
                if len(block) != want:
                    raise IntegrityError(f"{bin_path}: shorter than its provenance says")
                yield block
    finally:
        os.close(fd)


def write_kept_task(bin_path: str, prov_path: str, drop: list[int], dtype: str, target: str,
                    offset: int, nbytes: int) -> dict:
    """Write the kept documents' tokens of one part into ``target`` (already as long as the
    dataset's ``.bin`` will be) at ``offset``: the parts of a deduplicated build are written
    in parallel, each into its own range, instead of appended one after the other by the
    driver. Synced before the task's record says it is done."""
    blocks = kept_blocks(bin_path, provenance.part_sizes(prov_path), drop, dtype, nbytes)
    dst = os.open(target, os.O_WRONLY)
    try:
        at = offset
        for block in blocks:
            atomic.write_at(dst, block, at, target, pwrite)
            at += len(block)
        os.fsync(dst)
    finally:
        blocks.close()
        os.close(dst)
    return {"bytes": nbytes}


def pwrite(fd: int, data, at: int) -> int:
    """One write into a deduplicated build's ``.bin`` (a test makes it fail like a full disk)."""
    return os.pwrite(fd, data, at)


def subset_counts(sig_paths: Sequence[Path], removed: np.ndarray,
                  offsets: np.ndarray) -> dict[str, dict[str, int]]:
    """Documents kept and removed per subset, from the signature files (no tokens needed)."""
    drops = rows_by_partition(removed, offsets)
    out: dict[str, dict[str, int]] = {}
    for path, drop in zip(sig_paths, drops):
        names = read_parquet(path, ["pile_set_name"]).column("pile_set_name").to_numpy(
            zero_copy_only=False)
        gone = np.zeros(len(names), bool)
        gone[drop] = True
        for name in np.unique(names):
            sel = names == name
            acc = out.setdefault(str(name), {"kept": 0, "removed": 0})
            acc["removed"] += int(gone[sel].sum())
            acc["kept"] += int((~gone[sel]).sum())
    return out
