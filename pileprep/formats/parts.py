"""The intermediate files between stages, described: what one task hands to the next.

These small value classes travel through Dask (as task results) and through completion records
(as JSON), so they hold counts and paths, never data. ``outputs()`` names the files a later run
must find to reuse the task.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# An ingest partition: validated records of one shard, in line order.
PARTITION_SCHEMA = pa.schema([
    ("line", pa.int64()),
    ("text", pa.large_string()),
    ("pile_set_name", pa.string()),
])


@dataclass
class FileResult:
    """A task's result that is one file (``path``) and small facts about it: rebuilt from its
    completion record with ``from_json``."""

    path: str

    def outputs(self) -> list[str]:
        return [self.path]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "FileResult":
        return cls(**obj)


@dataclass
class Partition:
    path: str
    source: str
    shard_index: int
    index: int
    first_line: int
    rows: int
    text_bytes: int
    # Consumed by the ingest task that cut it, from memory: its file was never written.
    inline: bool = False

    @property
    def stem(self) -> str:
        """The partition's file name without ``.parquet``: names its files in later stages."""
        return Path(self.path).name.removesuffix(".parquet")


@dataclass
class Records:
    """A partition's documents held in memory by the ingest task that cut it, handed to the
    partition's consumers (tokenize, MinHash) in the same process instead of through a file."""

    lines: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    subsets: list[str] = field(default_factory=list)


@dataclass
class Batch:
    """Consecutive documents of a partition, as a consumer reads them."""

    lines: np.ndarray  # int64: line in the shard
    texts: list[str]
    subsets: list[str]
    nbytes: np.ndarray  # int64: UTF-8 bytes of each text


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """A whole parquet file (or some of its columns). Not ``pq.read_table``: it goes through
    ``pyarrow.dataset``, whose import alone took 0.35 s of the 0.6 s a build spent packing."""
    return pq.ParquetFile(path).read(columns=columns)


def preload_arrow() -> None:
    """Make pyarrow import pandas in a background thread while the driver only waits for
    workers: its first ``pa.array`` does (0.4 s), and the pack at the end of a build would pay
    for it then."""
    import threading

    threading.Thread(target=pa.array, args=([0],), name="pileprep-preload-arrow",
                     daemon=True).start()


def arrow_of(values, type_: pa.DataType) -> pa.Array:
    """A numeric (or, from a numpy bool mask, boolean) Arrow array wrapping ``values``'
    buffer. Not ``pa.array``: pyarrow checks its every input against pandas types, importing
    pandas to do so (0.2-0.4 s in each worker, at its first partition)."""
    if pa.types.is_boolean(type_):
        bits = np.packbits(np.asarray(values, np.bool_), bitorder="little")
        return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(bits)])
    values = np.ascontiguousarray(values, type_.to_pandas_dtype())
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(values)])


def codes_of(strings: list[str]) -> tuple[list[str], np.ndarray]:
    """Distinct strings in order of first appearance, and each string's index among them."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(s, len(index)) for s in strings), np.int32, len(strings))
    return list(index), codes


def dictionary_of(names: list[str], codes: np.ndarray) -> pa.DictionaryArray:
    """The strings ``names[codes]`` as a dictionary array (see :func:`arrow_of`)."""
    encoded = [name.encode() for name in names]
    offsets = np.zeros(len(encoded) + 1, np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    strings = pa.Array.from_buffers(pa.string(), len(names), [
        None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])
    return pa.DictionaryArray.from_arrays(arrow_of(codes, pa.int32()), strings)


def numpy_of(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric Arrow column as numpy, read from its buffers without a copy where it can be.
    Not ``to_numpy``: its first call imports pandas, 0.4 s in every process (the driver's pack,
    every worker's first partition)."""
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    dtype = np.dtype(values.type.to_pandas_dtype())
    if dtype == np.bool_ and not values.null_count:  # bits, as arrow_of writes them
        return np.concatenate([np.unpackbits(np.frombuffer(c.buffers()[1], np.uint8),
                                             count=len(c) + c.offset, bitorder="little")
                               [c.offset:].astype(np.bool_) for c in chunks]) if chunks \
            else np.zeros(0, dtype)
    if values.null_count or dtype == np.bool_ or not pa.types.is_primitive(values.type):
        return np.concatenate([c.to_numpy(zero_copy_only=False) for c in chunks]) if chunks \
            else np.zeros(0, dtype)
    parts = [np.frombuffer(c.buffers()[1], dtype, len(c) + c.offset)[c.offset:] for c in chunks]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def utf8_lengths(texts: list[str]) -> np.ndarray:
    # Most real text is ASCII, whose length needs no encoding.
    return np.fromiter((len(t) if t.isascii() else len(t.encode()) for t in texts), np.int64,
                       len(texts))


def partition_batches(path: str, records: Records | None, max_docs: int,
                      max_bytes: int = 1 << 62) -> Iterator[Batch]:
    """A partition's documents in batches of at most ``max_docs`` documents and about
    ``max_bytes`` of text, from ``records`` when it is held in memory, else from its file.

    Capping bytes as well as documents keeps a consumer's memory flat when long documents
    (books, code dumps) cluster together; a single huge document still forms a batch."""
    if records is not None:
        yield from _cut(np.asarray(records.lines, np.int64), records.texts, records.subsets,
                        utf8_lengths(records.texts), max_docs, max_bytes)
        return
    # One thread: a worker runs one task per core, and its CPU is counted on the task's thread.
    for b in pq.ParquetFile(path).iter_batches(batch_size=max_docs, use_threads=False):
        nbytes = numpy_of(pc.binary_length(b.column("text")))
        yield from _cut(numpy_of(b.column("line")), b.column("text").to_pylist(),
                        b.column("pile_set_name").to_pylist(), nbytes, max_docs, max_bytes)


def _cut(lines, texts, subsets, nbytes, max_docs: int, max_bytes: int) -> Iterator[Batch]:
    ends = np.cumsum(nbytes)
    start = 0
    while start < len(texts):
        base = ends[start - 1] if start else 0
        stop = min(int(np.searchsorted(ends, base + max_bytes, side="right")), start + max_docs)
        stop = max(stop, start + 1)
        yield Batch(lines[start:stop], texts[start:stop], subsets[start:stop], nbytes[start:stop])
        start = stop


@dataclass
class ShardResult:
    source: str
    path: str
    size: int
    sha256: str
    lines_read: int
    accepted: int
    rejected: dict[str, int]
    rejects_path: str
    partitions: list[Partition] = field(default_factory=list)
    shard_error: dict | None = None
    # CPU seconds of the partitions' consumers run inline, by stage: part of the ingest task's
    # time, counted for their own stages in the report's rates.
    inline_cpu: dict[str, float] = field(default_factory=dict)
    inline_reused: dict[str, int] = field(default_factory=dict)  # consumers an earlier run did

    @classmethod
    def from_json(cls, obj: dict) -> "ShardResult":
        obj = dict(obj)
        obj["partitions"] = [Partition(**p) for p in obj["partitions"]]
        return cls(**obj)

    def to_json(self) -> dict:
        return asdict(self)

    def outputs(self) -> list[str]:
        return [p.path for p in self.partitions] + [self.rejects_path]


@dataclass
class TokenPart:
    """What one tokenized partition produced; ``bin`` and ``prov`` are part file paths."""

    bin: str
    prov: str
    docs: int
    tokens: int
    text_bytes: int  # UTF-8 bytes of the documents' text
    # Ties the part to the exact input it was made from (resume check). Despite the name (kept
    # for work dirs already written), it holds stages.graph.shard_key: the shard's identity,
    # e.g. name, size and mtime, known before the shard is read through (unlike its sha256).
    shard_sha256: str = ""
    subsets: dict[str, list[int]] = field(default_factory=dict)  # name -> [docs, tokens, bytes]

    @classmethod
    def from_json(cls, obj: dict) -> "TokenPart":
        return cls(**obj)

    def to_json(self) -> dict:
        return asdict(self)

    def outputs(self) -> list[str]:
        return [self.bin, self.prov]
