"""Input kinds: Pile JSON lines, parquet/Arrow tables, and Hugging Face ``datasets`` sources.

Every input is cut into :class:`Shard` s, the unit one ingest task reads in order. A shard's
``name`` is the ``source`` of its documents' provenance, so it must be stable:

- a file (``.jsonl``, ``.jsonl.zst``, ``.parquet``, ``.arrow``), local or a URL that fsspec
  opens (``s3://``, ``gs://``, ``file://``, …; the store's fsspec package must be installed):
  its file name;
- ``hf:NAME[:CONFIG][@SPLIT]``: a ``datasets`` source opened with ``streaming=True`` (a hub id,
  or a local directory of data files), one shard per stream shard of the dataset, named
  ``hf:NAME[:CONFIG]@SPLIT#k``.

:func:`records` turns a shard into ``(line, Record | BadRecord, raw_bytes)`` items, with the same
rules for every kind: ``line`` is the 0-based row, the text comes from the chosen column and
must be a non-empty string, and the subset from ``meta.pile_set_name`` (or a ``pile_set_name``
column) when there is one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .reader import (SHARD_SUFFIXES, BadRecord, InputError, Record, ShardError, ShardStream,
                     check_record, discover_shards, is_url, open_binary, parse_line)

HF_PREFIX = "hf:"
TABLE_SUFFIXES = (".parquet", ".arrow")
_TABLE_BATCH = 1024  # rows decoded at once from a parquet/Arrow file


@dataclass(frozen=True)
class Shard:
    """One independently readable piece of the input."""

    name: str
    location: str  # a file path, or the hf: spec
    kind: str  # "jsonl" | "table" | "hf"
    part: int = 0  # which stream shard of an hf source...
    parts: int = 1  # ...out of how many

    @property
    def size(self) -> int:
        """Bytes of the file (0 for a streamed hf source: unknown before reading)."""
        if self.kind == "hf":
            return 0
        return _remote_info(self.location)[0] if is_url(self.location) else Path(self.location).stat().st_size

    def identity(self) -> dict:
        """What tells a finished read of this shard is still valid."""
        if self.kind == "hf":
            return {"spec": self.location, "part": self.part, "parts": self.parts}
        if is_url(self.location):
            size, version = _remote_info(self.location)
            return {"size": size, "version": version}
        st = Path(self.location).stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    @property
    def file_stem(self) -> str:
        """A file-system-safe stem for work files named after this shard."""
        if re.fullmatch(r"[A-Za-z0-9._-]+", self.name):
            return self.name
        digest = hashlib.sha256(self.name.encode()).hexdigest()[:10]
        return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', self.name)[-60:]}-{digest}"


@dataclass(frozen=True)
class HubSpec:
    name: str
    config: str | None
    split: str

    @classmethod
    def parse(cls, spec: str) -> "HubSpec":
        body = spec.removeprefix(HF_PREFIX)
        body, _, split = body.partition("@")
        # A local path may contain ':' only on Windows; NAME:CONFIG splits on the last one.
        name, _, config = body.rpartition(":") if ":" in body else (body, "", "")
        if not name:
            raise InputError(f"--input {spec!r}: expected hf:NAME[:CONFIG][@SPLIT]")
        return cls(name, config or None, split or "train")

    def label(self) -> str:
        return f"{HF_PREFIX}{self.name}{':' + self.config if self.config else ''}@{self.split}"


def _hub_stream(spec: HubSpec):
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a required dependency
        raise InputError(f"{spec.label()}: the datasets library is not installed") from exc
    try:
        return datasets.load_dataset(spec.name, spec.config, split=spec.split, streaming=True)
    except Exception as exc:  # datasets raises many kinds; all mean "cannot open this source"
        raise InputError(f"{spec.label()}: cannot open with datasets: "
                         f"{type(exc).__name__}: {exc}") from None


def _remote_info(url: str) -> tuple[int, str]:
    """Size and a version tag (ETag, mtime, …: whatever the store reports) of a URL."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    info = fs.info(path)
    version = next((str(info[k]) for k in ("ETag", "etag", "md5", "mtime", "LastModified",
                                           "updated", "created") if info.get(k)), "")
    return int(info["size"]), version


def _discover_urls(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``(name, url)`` of the shard files a URL names: a file, a directory or a glob."""
    import fsspec

    found = []
    for spec in specs:
        try:
            fs, path = fsspec.core.url_to_fs(spec)
            if fs.isdir(path):
                paths = [p for p in fs.ls(path, detail=False)]
            elif any(c in path for c in "*?["):
                paths = fs.glob(path)
            elif fs.exists(path):
                paths = [path]
            else:
                raise InputError(f"input {spec!r} does not exist")
        except (OSError, ValueError, ImportError) as exc:
            raise InputError(f"input {spec!r}: {exc}") from None
        protocol = spec.split("://", 1)[0]
        found += [(p.rstrip("/").rsplit("/", 1)[-1], f"{protocol}://{p.split('://', 1)[-1]}")
                  for p in paths if p.endswith(SHARD_SUFFIXES)]
    if specs and not found:
        raise InputError(f"no shards (*.jsonl.zst, *.jsonl, *.parquet, *.arrow) in {', '.join(specs)}")
    return found


def _kind(name: str) -> str:
    return "table" if name.endswith(TABLE_SUFFIXES) else "jsonl"


def discover(inputs: Sequence[str]) -> list[Shard]:
    """All shards of the inputs: files (local, or URLs through fsspec) sorted by name (see
    ``reader.discover_shards``), then hf sources in the order given, each cut into its stream
    shards."""
    files = [i for i in inputs if not i.startswith(HF_PREFIX) and not is_url(i)]
    urls = [i for i in inputs if not i.startswith(HF_PREFIX) and is_url(i)]
    shards = [Shard(p.name, str(p), _kind(p.name)) for p in (discover_shards(files) if files else [])]
    shards += [Shard(name, url, _kind(name)) for name, url in _discover_urls(urls)]
    shards = sorted(shards, key=lambda s: s.name)
    for spec_text in (i for i in inputs if i.startswith(HF_PREFIX)):
        spec = HubSpec.parse(spec_text)
        stream = _hub_stream(spec)
        n = max(1, int(getattr(stream, "num_shards", None) or getattr(stream, "n_shards", 1)))
        width = len(str(n - 1))
        shards += [Shard(f"{spec.label()}#{k:0{width}d}", spec_text, "hf", k, n) for k in range(n)]
    names = [s.name for s in shards]
    if len(set(names)) != len(names):
        raise InputError("the same input is given twice: " + next(n for n in names if names.count(n) > 1))
    return shards


class RecordStream:
    """Iterate ``(line, Record | BadRecord, raw_bytes)`` of one shard; afterwards ``sha256``,
    ``size`` (bytes read) and ``lines``. Raises :class:`ShardError` for whole-shard failures
    after yielding every row before them."""

    def __init__(self, shard: Shard, text_column: str = "text"):
        self.shard, self.text_column = shard, text_column
        self.sha256, self.size, self.lines = "", 0, 0

    def __iter__(self) -> Iterator[tuple[int, Record | BadRecord, int]]:
        if self.shard.kind == "jsonl":
            yield from self._jsonl()
        else:
            yield from self._rows()

    def _jsonl(self):
        stream = ShardStream(self.shard.location)
        try:
            for line, raw, partial in stream:
                rec = (BadRecord("truncated_line", "the shard's stream breaks inside this line")
                       if partial else parse_line(raw, self.text_column))
                yield line, rec, len(raw) + 1
        finally:
            self.sha256, self.size, self.lines = stream.sha256, stream.size, stream.lines

    def _rows(self):
        digest = hashlib.sha256()
        rows = _table_rows(self.shard) if self.shard.kind == "table" else _hub_rows(self.shard)
        try:
            for row in rows:
                rec = check_record(row, self.text_column, table=True)
                raw = (rec.text.encode("utf-8", "surrogatepass") if isinstance(rec, Record)
                       else repr(row).encode("utf-8", "backslashreplace"))
                digest.update(len(raw).to_bytes(8, "little") + raw)
                yield self.lines, rec, len(raw)
                self.lines += 1
                self.size += len(raw)
        except ShardError as exc:  # say how many rows came before the failure
            raise ShardError(exc.source, exc.reason, exc.detail, self.lines) from None
        finally:
            # Files are identified by their bytes; a streamed source by the rows it gave.
            self.sha256 = (_file_sha256(self.shard.location) if self.shard.kind == "table"
                           else digest.hexdigest())
            if self.shard.kind == "table":
                self.size = self.shard.size


def _table_rows(shard: Shard) -> Iterator[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = shard.location
    try:
        with open_binary(path) as f:
            if path.endswith(".parquet"):
                batches = pq.ParquetFile(f).iter_batches(batch_size=_TABLE_BATCH)
            else:
                batches = _arrow_batches(pa, f)
            for batch in batches:
                yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise ShardError(shard.name, "unreadable_table", str(exc).splitlines()[0], 0) from None


def _arrow_batches(pa, f):
    """Arrow IPC: the stream format (``datasets.save_to_disk``) or the file format."""
    try:
        reader = pa.ipc.open_stream(f)
    except pa.ArrowInvalid:
        f.seek(0)
        reader = pa.ipc.open_file(f)
        yield from (reader.get_batch(i) for i in range(reader.num_record_batches))
        return
    yield from reader


def _hub_rows(shard: Shard) -> Iterator[dict]:
    ds = _hub_stream(HubSpec.parse(shard.location))
    if shard.parts > 1:
        ds = ds.shard(num_shards=shard.parts, index=shard.part)
    try:
        yield from ds
    except Exception as exc:  # a network or decoding failure mid-stream
        raise ShardError(shard.name, "stream_failed", f"{type(exc).__name__}: {exc}", 0) from None


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open_binary(path) as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()
