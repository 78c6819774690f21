"""What every input kind shares: records, the accept/reject rules, shards, and the registry.

An input kind is a small module behind the :class:`SourceKind` protocol: which inputs it claims,
how it cuts them into :class:`Shard` s, and how it reads a shard's rows. Adding a format is one
module that calls :func:`register`; nothing else branches on kinds.

A shard's ``name`` is the ``source`` of its documents' provenance, so it must be stable: a
file's name (local, or a URL fsspec opens), or ``hf:NAME[:CONFIG]@SPLIT#k`` for a stream shard.
Every row ends as a :class:`Record` or a :class:`BadRecord` naming the reason, with the same
rules for every kind (:func:`check_record`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

import orjson

from pileprep.core.errors import InputError


class ShardError(InputError):
    """A whole-shard failure; ``reason`` is a short machine-readable tag."""

    def __init__(self, source: str, reason: str, detail: str, line: int):
        super().__init__(source, reason, detail, line)  # all of them: it crosses the cluster
        self.source, self.reason, self.detail, self.line = source, reason, detail, line

    def __str__(self) -> str:
        return f"{self.source}: {self.reason} after {self.line} complete lines: {self.detail}"


@dataclass(frozen=True)
class Record:
    text: str
    pile_set_name: str


@dataclass(frozen=True)
class BadRecord:
    reason: str
    detail: str


@dataclass(frozen=True)
class Shard:
    """One independently readable piece of the input, read in order by one ingest task."""

    name: str
    location: str  # a file path or URL, or the spec of a streamed source
    kind: str  # a registered SourceKind's name
    part: int = 0  # which stream shard of a streamed source...
    parts: int = 1  # ...out of how many

    @property
    def reader(self) -> "SourceKind":
        return KINDS[self.kind]

    @property
    def size(self) -> int:
        """Bytes of the input (0 when unknown before reading: a streamed source)."""
        return self.reader.size(self)

    @property
    def streamed(self) -> bool:
        """Its size is known only after reading it (compare such inputs by name alone)."""
        return self.reader.streamed

    def identity(self) -> dict:
        """What tells a finished read of this shard is still valid."""
        return self.reader.identity(self)

    @property
    def file_stem(self) -> str:
        """A file-system-safe stem for work files named after this shard."""
        if re.fullmatch(r"[A-Za-z0-9._-]+", self.name):
            return self.name
        digest = hashlib.sha256(self.name.encode()).hexdigest()[:10]
        return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', self.name)[-60:]}-{digest}"


class RowStream(Protocol):
    """``(line, Record | BadRecord, raw_bytes)`` of one shard; after iteration ``sha256``,
    ``size`` (bytes read) and ``lines``. Raises :class:`ShardError` for a whole-shard failure
    after yielding every row before it."""

    sha256: str
    size: int
    lines: int

    def __iter__(self) -> Iterator[tuple[int, Record | BadRecord, int]]: ...


class SourceKind(Protocol):
    """One input format. File formats claim file names by suffix; others claim a spec prefix."""

    name: str
    suffixes: tuple[str, ...]  # file names it reads; () for a non-file kind
    prefix: str  # spec prefix it claims ("hf:"); "" for file kinds
    streamed: bool

    def expand(self, spec: str) -> list[Shard]: ...  # only for prefix kinds

    def size(self, shard: Shard) -> int: ...

    def identity(self, shard: Shard) -> dict: ...

    def rows(self, shard: Shard, text_column: str) -> RowStream: ...


KINDS: dict[str, SourceKind] = {}


def register(kind: SourceKind) -> SourceKind:
    KINDS[kind.name] = kind
    return kind


def file_suffixes() -> tuple[str, ...]:
    return tuple(s for k in KINDS.values() for s in k.suffixes)


def kind_of_file(name: str) -> SourceKind | None:
    return next((k for k in KINDS.values() if name.endswith(k.suffixes)), None) if name else None


def prefix_kind(spec: str) -> SourceKind | None:
    return next((k for k in KINDS.values() if k.prefix and spec.startswith(k.prefix)), None)


def check_record(obj: dict, text_column: str = "text", table: bool = False) -> Record | BadRecord:
    """The accept/reject rules every input kind shares, on a decoded record.

    ``table``: a row of parquet, Arrow or ``datasets``, where a null subset means none, ``meta``
    may be stored as a JSON string, and the subset may be a top-level ``pile_set_name`` column.
    """
    if text_column not in obj:
        return BadRecord("missing_text", f"no {text_column!r} field")
    text = obj[text_column]
    if not isinstance(text, str):
        return BadRecord("text_not_string", f"{text_column!r} is a {type(text).__name__}")
    if not text:
        return BadRecord("empty_text", f"{text_column!r} is empty")
    meta = obj.get("meta")
    if table and isinstance(meta, str):
        try:
            meta = orjson.loads(meta)
        except orjson.JSONDecodeError:
            return BadRecord("bad_meta", "'meta' is a string that is not JSON")
    if meta is None:
        subset = obj.get("pile_set_name", "") if table else ""
    elif isinstance(meta, dict):
        subset = meta.get("pile_set_name", "")
    else:
        return BadRecord("bad_meta", f"'meta' is a {type(meta).__name__}, not an object")
    if subset is None and table:
        subset = ""
    if not isinstance(subset, str):
        return BadRecord("bad_meta", "'pile_set_name' is not a string")
    return Record(text, subset)




class TableRows:
    """A :class:`RowStream` over decoded rows (parquet, Arrow, ``datasets``): each row checked
    with the table rules; the hash is the file's, or for a stream that of the rows it gave."""

    def __init__(self, shard: Shard, rows: Iterable[dict], text_column: str, file_hash=None):
        self.shard, self._rows, self.text_column = shard, rows, text_column
        self._file_hash = file_hash  # () -> (sha256, size) of the file, when there is one
        self.sha256, self.size, self.lines = "", 0, 0

    def __iter__(self) -> Iterator[tuple[int, Record | BadRecord, int]]:
        digest = hashlib.sha256()
        try:
            for row in self._rows:
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
            if self._file_hash is not None:
                self.sha256, self.size = self._file_hash()
            else:
                self.sha256 = digest.hexdigest()
