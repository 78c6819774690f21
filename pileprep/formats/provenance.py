"""The provenance table: one row per document of the ``.bin``, saying where it came from.

Columns (parquet, in dataset order):

- ``doc`` (int64): index of the document in the indexed dataset;
- ``source`` (string): shard file name; ``line`` (int64): 0-based line in that shard;
- ``pile_set_name`` (string): the Pile subset from ``meta``, "" when absent;
- ``tokens`` (int32): tokens of the document including the EOD token;
- ``token_start`` (int64): position of the document's first token in the ``.bin`` (in tokens);
- ``bytes`` (int64): UTF-8 length of the source text.

``token_start`` is what maps any token position back to its document with one binary search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pileprep.core import atomic, tables
from pileprep.core.errors import NotFoundError
from pileprep.formats.indexed import FileArray
from pileprep.formats.parts import arrow_of, codes_of, dictionary_of, numpy_of, read_parquet
from pileprep.core.files import PROVENANCE

PART_SCHEMA = pa.schema([
    ("source", pa.dictionary(pa.int32(), pa.string())),
    ("line", pa.int64()),
    ("pile_set_name", pa.dictionary(pa.int32(), pa.string())),
    ("tokens", pa.int32()),
    ("bytes", pa.int64()),
])
SCHEMA = pa.schema([
    ("doc", pa.int64()), ("source", pa.string()), ("line", pa.int64()),
    ("pile_set_name", pa.string()), ("tokens", pa.int32()), ("token_start", pa.int64()),
    ("bytes", pa.int64()),
])
FILE_NAME = PROVENANCE
# Fixed-size row groups make the file's bytes independent of how the build was partitioned.
ROW_GROUP = 1 << 20

# An adopted dataset (pileprep adopt: a published .bin/.idx) knows its sources only by matching
# raw text to its documents: source, line, pile_set_name and bytes are null where nothing
# matched, and two more columns say how each row was found.
MATCHES = ("exact", "ambiguous", "none")
ALIGNED_SCHEMA = pa.schema(list(SCHEMA) + [("match", pa.string()), ("candidates", pa.int32())])


def part_table(source: str, lines, subsets: list[str], tokens, nbytes) -> pa.Table:
    # Arrays are wrapped from their buffers, not made by pa.array (see parts.arrow_of).
    n = len(lines)
    return pa.table({
        "source": dictionary_of([source], np.zeros(n, np.int32)),
        "line": arrow_of(lines, pa.int64()),
        "pile_set_name": dictionary_of(*codes_of(subsets)),
        "tokens": arrow_of(tokens, pa.int32()),
        "bytes": arrow_of(nbytes, pa.int64()),
    }, schema=PART_SCHEMA)


def merge(parts: Iterable[str | Path], out_path: str | Path, row_group: int = ROW_GROUP) -> str:
    """Concatenate part tables in order, adding ``doc`` and ``token_start``; return sha256."""
    doc, token = 0, 0
    pending: list[pa.Table] = []
    with pq.ParquetWriter(out_path, SCHEMA, compression="zstd") as writer:
        for part in parts:
            t = read_parquet(part)
            sizes = numpy_of(t.column("tokens")).astype(np.int64)
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) + token
            pending.append(pa.table({
                "doc": pa.array(np.arange(doc, doc + t.num_rows, dtype=np.int64)),
                "source": t.column("source").cast(pa.string()), "line": t.column("line"),
                "pile_set_name": t.column("pile_set_name").cast(pa.string()),
                "tokens": t.column("tokens"), "token_start": pa.array(starts[:t.num_rows]),
                "bytes": t.column("bytes"),
            }, schema=SCHEMA))
            doc += t.num_rows
            token += int(sizes.sum())
            pending = write_full_groups(writer, pending, row_group, final=False)
        write_full_groups(writer, pending, row_group, final=True)
    return atomic.sha256_file(out_path)


def write_full_groups(writer, pending: list[pa.Table], row_group: int, final: bool) -> list[pa.Table]:
    """Write the whole row groups the pending tables make (all of them when ``final``); keep
    the rest. Fixed-size groups make a file's bytes independent of how it was fed."""
    buf = pa.concat_tables(pending) if pending else writer.schema.empty_table()
    start = 0
    while buf.num_rows - start >= row_group or (final and start < buf.num_rows):
        chunk = buf.slice(start, min(row_group, buf.num_rows - start)).combine_chunks()
        writer.write_table(chunk, row_group_size=row_group)
        start += chunk.num_rows
    return [buf.slice(start)] if start < buf.num_rows else []


def part_sizes(part: str | Path) -> np.ndarray:
    return numpy_of(read_parquet(part, ["tokens"]).column("tokens"))


class ByDocument:
    """``provenance.parquet`` read by document: only the row groups holding the documents asked
    for are read (a few kept in memory), so a lookup costs the same for 400 documents as for
    the Pile's 210 million."""

    COLUMNS = ["source", "line", "pile_set_name"]

    def __init__(self, path: str | Path, cached_groups: int = 4):
        self.path = Path(path)
        self.file = pq.ParquetFile(self.path)  # read, not mapped: a pass over it keeps a flat RSS
        meta = self.file.metadata
        self.starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        self._cache: dict[int, pa.Table] = {}
        self._keep = cached_groups
        self._lookup: Lookup | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _group(self, g: int) -> pa.Table:
        if g not in self._cache:
            if len(self._cache) >= self._keep:
                self._cache.pop(next(iter(self._cache)))
            self._cache[g] = self.file.read_row_group(g, columns=self.COLUMNS)
        return self._cache[g]

    def get(self, docs) -> tuple[list, np.ndarray, list]:
        """``(source, line, pile_set_name)`` of each document: sources None where unknown, lines
        -1 there, subsets "" where unknown or absent. A table of more than one row group is
        read through its fixed-width lookup records (:class:`Lookup`): one page per document
        instead of whole row groups."""
        docs = np.asarray(docs, np.int64)
        if len(self.starts) > 2:
            if self._lookup is None:
                self._lookup = Lookup.of(self.path)
            return self._lookup.get(docs)
        sources: list = [None] * len(docs)
        subsets: list = [""] * len(docs)
        lines = np.full(len(docs), -1, np.int64)
        group = np.searchsorted(self.starts, docs, side="right") - 1
        for g in np.unique(group).tolist():
            where = np.flatnonzero(group == g)
            rows = self._group(g).take(pa.array(docs[where] - self.starts[g]))
            for i, src, sub in zip(where.tolist(), rows.column("source").to_pylist(),
                                   rows.column("pile_set_name").to_pylist()):
                sources[i], subsets[i] = src, sub or ""
            lines[where] = pc.fill_null(rows.column("line"), -1).to_numpy()
        return sources, lines, subsets

    def subset_codes(self, docs) -> tuple[np.ndarray, list[str]]:
        """For each document, the index of its ``pile_set_name`` ("" where unknown) in the
        returned sorted names; through the lookup's subset ids when there is one (no Python
        string per document: step ranges ask for millions)."""
        docs = np.asarray(docs, np.int64)
        if len(self.starts) <= 2:
            names, codes = np.unique(np.asarray(self.get(docs)[2], dtype=object).astype(str),
                                     return_inverse=True)
            return codes.reshape(-1), names.tolist()
        if self._lookup is None:
            self._lookup = Lookup.of(self.path)
        ids, back = np.unique(np.asarray(self._lookup.subset[docs]), return_inverse=True)
        strs = np.array([self._lookup.subsets[i] if i >= 0 else "" for i in ids.tolist()], dtype=str)
        names, codes = np.unique(strs, return_inverse=True)  # -1 and a "" subset are one name
        return codes[back.reshape(-1)], names.tolist()

    def find(self, source: str, line: int) -> int:
        """The document index of input line ``source:line``: row groups whose statistics cannot
        hold it are skipped (a built dataset is in ``(source, line)`` order), the others scanned."""
        meta, seen_source = self.file.metadata, False
        for g in range(meta.num_row_groups):
            if not _may_hold(meta.row_group(g), source, line):
                continue
            t = self.file.read_row_group(g, columns=["source", "line"])
            match = pc.equal(t.column("source"), source)
            seen_source = seen_source or pc.any(match).as_py()
            hits = np.flatnonzero(pc.and_(match, pc.equal(t.column("line"), line)).to_numpy(
                zero_copy_only=False) == True)  # noqa: E712 - nulls are False here
            if len(hits):
                return int(self.starts[g] + hits[0])
        if not seen_source:
            raise NotFoundError(f"no document of the dataset comes from {source!r}")
        raise NotFoundError(f"{source}:{line} is not in the dataset (rejected or removed as a "
                            "duplicate: see rejects.jsonl and duplicates.parquet)")


class Lookup:
    """A fixed-width record per document derived from ``provenance.parquet`` for random
    access: a source id (int32), a subset id (int16) and the line (int64), packed in one
    14-byte record so a document costs one read (on a cold page cache, a batch's sources are a
    few thousand scattered reads: one file instead of three is a third of the waiting), plus
    the two name lists; and the subset ids alone (int16), which step ranges read for
    millions of documents at once in passes over the file. Built once by one streaming pass (seconds for the Pile's 210 M rows:
    the string columns are read as the dictionaries parquet stores them), kept in
    ``OUT_DIR/.pileprep-cache/`` (or the user cache when OUT_DIR is read-only) and rebuilt
    when the table changes."""

    RECORD = np.dtype([("source", "<i4"), ("subset", "<i2"), ("line", "<i8")])  # packed
    VERSION = 2  # in the cache key: a cache of another layout is never read as this one

    def __init__(self, directory: Path):
        names = atomic.read_json(directory / "names.json")
        self.sources, self.subsets = names["sources"], names["subsets"]
        path = directory / "records.bin"
        # Read with pread at scattered documents: nothing stays mapped (see FileArray).
        self.records = FileArray(path, self.RECORD, (path.stat().st_size // self.RECORD.itemsize,))
        self.subset = FileArray(directory / "subset.bin", np.int16, (len(self.records),))

    @classmethod
    def of(cls, path: Path) -> "Lookup":
        st = path.stat()
        key = f"provenance-lookup-v{cls.VERSION}-{st.st_size}-{st.st_mtime_ns}"
        for root in (path.parent / ".pileprep-cache", tables.cache_dir() / _path_key(path)):
            if (root / key / "names.json").exists():
                return cls(root / key)
        for root in (path.parent / ".pileprep-cache", tables.cache_dir() / _path_key(path)):
            try:
                return cls(_build_lookup(path, root, key))
            except OSError:
                continue  # a read-only directory: try the user cache
        raise OSError(f"cannot write a provenance lookup for {path} anywhere")

    def get(self, docs: np.ndarray) -> tuple[list, np.ndarray, list]:
        rec = np.asarray(self.records[docs])
        return ([self.sources[i] if i >= 0 else None for i in rec["source"].tolist()],
                rec["line"].astype(np.int64),
                [self.subsets[i] if i >= 0 else "" for i in rec["subset"].tolist()])


def _path_key(path: Path) -> str:
    import hashlib

    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]


def _ids(column: pa.ChunkedArray, table: dict[str, int]) -> np.ndarray:
    """Global ids (first-seen order, kept in ``table``) of a dictionary column's values, -1
    for nulls; each chunk's own dictionary is mapped onto the global one."""
    out = []
    for chunk in column.chunks:
        remap = np.array([table.setdefault(v, len(table)) for v in chunk.dictionary.to_pylist()]
                         + [-1], np.int64)
        out.append(remap[pc.fill_null(chunk.indices, -1).to_numpy()])
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _build_lookup(path: Path, root: Path, key: str) -> Path:
    """One pass over the row groups into the records file, in a temporary directory renamed
    into place when complete."""
    import shutil
    import tempfile

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        # Strings read as parquet's own dictionaries: no Python string per row.
        file = pq.ParquetFile(path, read_dictionary=["source", "pile_set_name"])
        ids: dict[str, dict] = {"source": {}, "subset": {}}
        # Appended with plain writes, a row group at a time: a map being written would keep
        # every dirty page of a 210 M-record file resident.
        with open(tmp / "records.bin", "wb") as out, open(tmp / "subset.bin", "wb") as subset:
            for g in range(file.metadata.num_row_groups):
                t = file.read_row_group(g, columns=["source", "line", "pile_set_name"])
                rec = np.empty(t.num_rows, Lookup.RECORD)
                rec["source"] = _ids(_as_dictionary(t.column("source")), ids["source"])
                rec["subset"] = _ids(_as_dictionary(t.column("pile_set_name")), ids["subset"])
                rec["line"] = pc.fill_null(t.column("line"), -1).to_numpy()
                rec.tofile(out)
                np.ascontiguousarray(rec["subset"]).tofile(subset)
        names = {k: [v for v, _ in sorted(d.items(), key=lambda kv: kv[1])] for k, d in ids.items()}
        atomic.write_json(tmp / "names.json", {"sources": names["source"], "subsets": names["subset"]})
        final = root / key
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for stale in root.glob("provenance-lookup-*"):  # of an older table or layout
            if stale != final:
                shutil.rmtree(stale, ignore_errors=True)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _as_dictionary(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The column dictionary-encoded (a column of nulls only may come back as plain)."""
    return column if pa.types.is_dictionary(column.type) else column.dictionary_encode()


def _may_hold(group_meta, source: str, line: int) -> bool:
    """False only when the row group's min/max statistics exclude ``(source, line)``."""
    names = {group_meta.column(i).path_in_schema: group_meta.column(i).statistics
             for i in range(group_meta.num_columns)}
    src = names.get("source")
    if src is not None and src.has_min_max and not (src.min <= source <= src.max):
        return False
    ln = names.get("line")
    if ln is not None and ln.has_min_max and src is not None and src.has_min_max \
            and src.min == src.max and not (ln.min <= line <= ln.max):
        return False
    return True


def read(out_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(Path(out_dir) / FILE_NAME, columns=columns)


def subset_totals(table) -> dict[str, list[int]]:
    """Documents, tokens and text bytes per ``pile_set_name`` in a provenance part table.
    Counted with numpy: Arrow's group_by loads pyarrow.dataset and pandas, 0.7 s in a worker."""
    tokens = numpy_of(table.column("tokens")).astype(np.int64)
    nbytes = numpy_of(table.column("bytes")).astype(np.int64)
    out: dict[str, list[int]] = {}
    start = 0
    for chunk in table.column("pile_set_name").chunks:
        if pa.types.is_dictionary(chunk.type):
            names, codes = chunk.dictionary.to_pylist(), numpy_of(chunk.indices)
        else:
            names, codes = codes_of(chunk.to_pylist())
        stop = start + len(chunk)
        sums = np.zeros((len(names), 3), np.int64)
        np.add.at(sums, codes, np.stack([np.ones(len(codes), np.int64), tokens[start:stop],
                                         nbytes[start:stop]], axis=1))
        for name, row in zip(names, sums.tolist()):
            if row[0]:
                acc = out.setdefault(name, [0, 0, 0])
                for i, v in enumerate(row):
                    acc[i] += v
        start = stop
    return out


def aligned_chunk(first_doc: int, first_token: int, sizes: np.ndarray, source=None, line=None,
                  subset=None, nbytes=None, match=None, candidates=None) -> pa.Table:
    """Rows ``first_doc ..`` of an adopted dataset's provenance; columns not given are null
    (and ``match`` "none", ``candidates`` 0)."""
    n = len(sizes)
    sizes64 = np.asarray(sizes, np.int64)
    starts = np.cumsum(sizes64) - sizes64 + first_token

    def col(values, typ):
        return pa.nulls(n, typ) if values is None else pa.array(values, typ)

    return pa.table({
        "doc": pa.array(np.arange(first_doc, first_doc + n, dtype=np.int64)),
        "source": col(source, pa.string()), "line": col(line, pa.int64()),
        "pile_set_name": col(subset, pa.string()),
        "tokens": pa.array(np.asarray(sizes, np.int32)), "token_start": pa.array(starts),
        "bytes": col(nbytes, pa.int64()),
        "match": pa.array(["none"] * n if match is None else match, pa.string()),
        "candidates": pa.array(np.zeros(n, np.int32) if candidates is None else candidates, pa.int32()),
    }, schema=ALIGNED_SCHEMA)
