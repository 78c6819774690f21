"""Apply a dedup result: the table of removed documents, and token parts without them."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pileprep.core import atomic
from pileprep.formats import provenance
from pileprep.core.files import DUPLICATES
from pileprep.formats.parts import Partition, TokenPart, numpy_of, read_parquet
from pileprep.dedup import steps

TABLE = DUPLICATES
TABLE_SCHEMA = pa.schema([
    ("source", pa.string()), ("line", pa.int64()), ("pile_set_name", pa.string()),
    ("kept_source", pa.string()), ("kept_line", pa.int64()),
    ("similarity", pa.float32()), ("direct", pa.bool_()),
])


def rows_by_partition(removed: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """Row numbers, within each partition, of the removed documents."""
    part = steps.part_of(removed["gid"], offsets)
    return [removed["gid"][part == i] - offsets[i] for i in range(len(offsets))]


def _lookup(gids: np.ndarray, offsets: np.ndarray, parts: Sequence[Partition],
            sig_paths: Sequence[Path]) -> tuple[list[str], np.ndarray, list[str]]:
    """Source, line and subset of each gid, reading only the partitions that hold one."""
    part = steps.part_of(gids, offsets)
    sources = [parts[i].source for i in part]
    lines = np.zeros(len(gids), np.int64)
    subsets = [""] * len(gids)
    for i in np.unique(part):
        sel = np.flatnonzero(part == i)
        t = read_parquet(sig_paths[i], ["line", "pile_set_name"])
        local = gids[sel] - offsets[i]
        lines[sel] = numpy_of(t.column("line"))[local]
        names = t.column("pile_set_name").to_pylist()
        for j, k in zip(sel, local):
            subsets[j] = names[k]
    return sources, lines, subsets


def write_table(removed: np.ndarray, offsets: np.ndarray, parts: Sequence[Partition],
                sig_paths: Sequence[Path], out_path: Path) -> str:
    """Write the removed-documents table (in ``(source, line)`` order); return its sha256."""
    # One pass over the partitions for both ends: each signature file is read once.
    n = len(removed)
    sources, lines, subsets = _lookup(np.concatenate([removed["gid"], removed["kept"]]),
                                      offsets, parts, sig_paths)
    src, line, subset = sources[:n], lines[:n], subsets[:n]
    ksrc, kline = sources[n:], lines[n:]
    table = pa.table([src, line, subset, ksrc, kline, removed["sim"], removed["direct"]],
                     schema=TABLE_SCHEMA)
    with atomic.atomic_path(out_path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=provenance.ROW_GROUP)
    return atomic.sha256_file(out_path)


def drop_documents(part: TokenPart, drop: np.ndarray, out_dir: str, dtype: str,
                   tokens: bool = True) -> tuple[memoryview | None, TokenPart, dict]:
    """``part`` without the documents at rows ``drop``: the kept tokens' bytes (read only when
    ``tokens``; the pack appends them), the part as packed (its provenance written to
    ``out_dir``; ``bin`` stays the source part's), and the documents, tokens and text bytes
    removed per subset. The kept documents' tokens are unchanged and in order.
    """
    stem = Path(part.bin).name.removesuffix(".bin")
    prov = read_parquet(part.prov)
    sizes = numpy_of(prov.column("tokens")).astype(np.int64)
    keep = np.ones(len(sizes), bool)
    keep[np.asarray(drop, np.int64)] = False
    kept_prov = prov.filter(pa.array(keep))
    prov_path = Path(out_dir) / f"{stem}.prov.parquet"
    with atomic.atomic_path(prov_path) as tmp:
        pq.write_table(kept_prov, tmp)
    data = None
    if tokens:
        kept = np.fromfile(part.bin, dtype=np.dtype(dtype))[np.repeat(keep, sizes)]
        data = memoryview(np.ascontiguousarray(kept)).cast("B")
    kept_sizes = sizes[keep]
    new = TokenPart(part.bin, str(prov_path), int(keep.sum()), int(kept_sizes.sum()),
                    int(numpy_of(kept_prov.column("bytes")).sum()), part.shard_sha256,
                    provenance.subset_totals(kept_prov))
    return data, new, provenance.subset_totals(prov.filter(pa.array(~keep)))


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
