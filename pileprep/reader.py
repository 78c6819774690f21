"""Read Pile shards: find them, stream their lines, and turn each line into a record or a reason.

A shard is ``NN.jsonl.zst`` (or plain ``.jsonl``) holding one JSON object per line. Reading is
streamed: compressed input is fed to the decompressor in small chunks and lines are cut from a
bounded buffer, so memory does not depend on the shard's size. The sha256 and size of the
compressed file are computed on the way through, for the build manifest.

Every line ends in exactly one of two ways: a :class:`Record`, or a :class:`BadRecord` naming the
reason. Shard-level failures (not zstd, truncated stream, unreadable file) are raised as
:class:`ShardError` after every complete line before the failure has been yielded.
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import orjson
import zstandard

SHARD_SUFFIXES = (".jsonl.zst", ".jsonl", ".parquet", ".arrow")  # tables: see sources
_COMPRESSED_CHUNK = 1 << 16  # small input chunks bound the decompressed burst per step
_PLAIN_CHUNK = 1 << 20


class InputError(Exception):
    """A problem with what the user asked for (missing input, no shards): reported before work."""


class ShardError(Exception):
    """A whole-shard failure; ``reason`` is a short machine-readable tag."""

    def __init__(self, source: str, reason: str, detail: str, line: int):
        super().__init__(f"{source}: {reason} after {line} complete lines: {detail}")
        self.source, self.reason, self.detail, self.line = source, reason, detail, line


@dataclass(frozen=True)
class Record:
    text: str
    pile_set_name: str


@dataclass(frozen=True)
class BadRecord:
    reason: str
    detail: str


def shard_name(path: Path) -> str:
    """The document identity uses the file name only, so moving a corpus keeps provenance."""
    return Path(path).name


def is_shard(path: Path) -> bool:
    return path.name.endswith(SHARD_SUFFIXES)


def discover_shards(inputs: Sequence[str]) -> list[Path]:
    """Expand directories, globs and files into shards sorted by file name.

    Sorting by name (not by the order given) makes ``(source, line)`` a stable identity and the
    output independent of how the user spelled the inputs. Two shards with the same file name
    would make that identity ambiguous, so they are an error.
    """
    found: list[Path] = []
    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            found.extend(p for p in path.iterdir() if p.is_file() and is_shard(p))
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(spec):
            matches = [Path(p) for p in glob.glob(spec)]
            found.extend(p for p in matches if p.is_file())
            if not matches:
                raise InputError(f"input pattern {spec!r} matches no file")
        else:
            raise InputError(f"input {spec!r} does not exist")
    shards = sorted(set(p.resolve() for p in found), key=lambda p: (p.name, str(p)))
    if not shards:
        raise InputError(f"no shards (*.jsonl.zst, *.jsonl, *.parquet, *.arrow) found in {', '.join(inputs)}")
    names = [p.name for p in shards]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"several input shards share the file name {dupes[0]!r}; "
                         "documents are identified by file name, so names must be unique")
    return shards


def is_url(path) -> bool:
    """``s3://…``, ``gs://…``, ``file://…``: a path for fsspec rather than the local filesystem."""
    return "://" in str(path)


def open_binary(path):
    """A local file, or a URL through fsspec (object stores need their fsspec package)."""
    if is_url(path):
        import fsspec

        return fsspec.open(str(path), "rb").open()
    return open(path, "rb")


class _HashingFile:
    """Reads a file while computing its sha256 and counting bytes."""

    def __init__(self, path):
        self._f = open_binary(path)
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        self.sha256.update(data)
        self.bytes += len(data)
        return data

    def close(self) -> None:
        self._f.close()


def _decompressed_chunks(src: _HashingFile, source: str, lines_so_far) -> Iterator[bytes]:
    """Yield decompressed bytes across all frames; detect a stream cut inside a frame."""
    dobj = zstandard.ZstdDecompressor().decompressobj()
    in_frame = False
    while True:
        data = src.read(_COMPRESSED_CHUNK)
        if not data:
            break
        if src.bytes == len(data) and not _is_zstd_start(data):
            raise ShardError(source, "not_zstd", f"starts with {data[:4].hex()}, not a zstd frame", 0)
        while data:
            try:
                out = dobj.decompress(data)
            except zstandard.ZstdError as exc:
                raise ShardError(source, "corrupt_zstd", str(exc), lines_so_far()) from None
            in_frame = True
            if out:
                yield out
            if dobj.eof:
                data = dobj.unused_data
                dobj = zstandard.ZstdDecompressor().decompressobj()
                in_frame = False
            else:
                data = b""
    if in_frame:
        raise ShardError(source, "truncated_zstd", "the compressed stream ends inside a frame",
                         lines_so_far())


def _is_zstd_start(data: bytes) -> bool:
    """A zstd frame, or a skippable frame (magic 0x184D2A50..5F, little-endian)."""
    return data[:4] == b"\x28\xb5\x2f\xfd" or (data[1:4] == b"\x2a\x4d\x18" and data[0] & 0xF0 == 0x50)


def _plain_chunks(src: _HashingFile) -> Iterator[bytes]:
    while True:
        data = src.read(_PLAIN_CHUNK)
        if not data:
            return
        yield data


class ShardStream:
    """Iterate ``(line_number, raw_bytes)`` of one shard; afterwards ``sha256`` and ``size``.

    Lines are split on ``\\n`` only, as JSON-lines requires; a final line without a newline is
    still a line. When a compressed stream is cut, the partial last line is yielded with
    ``partial=True`` before the :class:`ShardError` is raised, so the caller can count it.
    """

    def __init__(self, path):
        self.path = path if is_url(path) else Path(path)
        self.source = str(path).rstrip("/").rsplit("/", 1)[-1]
        self.sha256 = ""
        self.size = 0
        self.lines = 0

    def __iter__(self) -> Iterator[tuple[int, bytes, bool]]:
        try:
            src = _HashingFile(self.path)
        except OSError as exc:
            raise ShardError(self.source, "unreadable", exc.strerror or str(exc), 0) from None
        try:
            if str(self.path).endswith(".zst"):
                chunks = _decompressed_chunks(src, self.source, lambda: self.lines)
            else:
                chunks = _plain_chunks(src)
            yield from self._split(chunks)
        except OSError as exc:
            raise ShardError(self.source, "unreadable", exc.strerror or str(exc), self.lines) from None
        finally:
            self.sha256, self.size = src.sha256.hexdigest(), src.bytes
            src.close()

    def _split(self, chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes, bool]]:
        rest = b""
        try:
            for chunk in chunks:
                buf = rest + chunk if rest else chunk
                start = 0
                while True:
                    end = buf.find(b"\n", start)
                    if end < 0:
                        break
                    yield self.lines, buf[start:end], False
                    self.lines += 1
                    start = end + 1
                rest = buf[start:]
        except ShardError:
            if rest:
                yield self.lines, rest, True
                self.lines += 1
            raise
        if rest:
            yield self.lines, rest, False
            self.lines += 1


def parse_line(raw: bytes, text_column: str = "text") -> Record | BadRecord:
    """Validate one JSON line of the Pile format (the text under ``text_column``).

    Accepted: an object with a string ``text`` and, when ``meta`` is present, an object whose
    ``pile_set_name`` (if present) is a string. A missing ``meta`` is allowed (corpora other than
    the Pile have none) and gives an empty subset name. Empty text is rejected, as GPT-NeoX's
    preprocessing drops it too.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _classify_json_error(raw, exc)
    if not isinstance(obj, dict):
        return BadRecord("not_an_object", f"a JSON {type(obj).__name__}, not an object")
    return check_record(obj, text_column)


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


def _classify_json_error(raw: bytes, exc: Exception) -> BadRecord:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as ude:
        return BadRecord("invalid_utf8", f"invalid UTF-8 at byte {ude.start}")
    msg = str(exc)
    if "surrogate" in msg:
        return BadRecord("lone_surrogate", msg)
    return BadRecord("invalid_json", msg)

