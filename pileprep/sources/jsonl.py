"""Pile JSON lines (``NN.jsonl.zst`` or plain ``.jsonl``): stream lines, parse and validate each.

Reading is streamed: compressed input is fed to the decompressor in small chunks and lines are
cut from a bounded buffer, so memory does not depend on the shard's size. The sha256 and size of
the file are computed on the way through, for the build manifest. Shard-level failures (not
zstd, truncated stream, unreadable file) are raised as :class:`ShardError` after every complete
line before the failure has been yielded; the partial last line is reported as a bad record.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

import orjson
import zstandard

from pileprep.sources import files
from pileprep.sources.base import BadRecord, Record, Shard, ShardError, check_record, register

_COMPRESSED_CHUNK = 1 << 16  # small input chunks bound the decompressed burst per step
_PLAIN_CHUNK = 1 << 20


class _HashingFile:
    """Reads a file while computing its sha256 and counting bytes."""

    def __init__(self, path):
        self._f = files.open_binary(path)
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
        self.path = str(path)
        self.source = files.base_name(path)
        self.sha256 = ""
        self.size = 0
        self.lines = 0
        self._src: _HashingFile | None = None

    @property
    def bytes_read(self) -> int:
        """Bytes of the file read so far (compressed, for a .zst): read progress."""
        return self._src.bytes if self._src is not None else self.size

    def __iter__(self) -> Iterator[tuple[int, bytes, bool]]:
        try:
            src = self._src = _HashingFile(self.path)
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


def _classify_json_error(raw: bytes, exc: Exception) -> BadRecord:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as ude:
        return BadRecord("invalid_utf8", f"invalid UTF-8 at byte {ude.start}")
    msg = str(exc)
    if "surrogate" in msg:
        return BadRecord("lone_surrogate", msg)
    return BadRecord("invalid_json", msg)


class JsonLines(files.FileKind):
    """The Pile's own format: one JSON object per line, optionally zstd-compressed."""

    name = "jsonl"
    suffixes = (".jsonl.zst", ".jsonl")

    def rows(self, shard: Shard, text_column: str) -> "LineRecords":
        return LineRecords(shard.location, text_column)


class LineRecords:
    """``(line, Record | BadRecord, raw_bytes)`` of one JSON-lines shard."""

    def __init__(self, location: str, text_column: str):
        self.location, self.text_column = location, text_column
        self.sha256, self.size, self.lines = "", 0, 0
        self._stream: ShardStream | None = None

    @property
    def bytes_read(self) -> int:
        """Bytes of the shard's file read so far, while it is read (progress lines)."""
        return self._stream.bytes_read if self._stream is not None else self.size

    def __iter__(self):
        stream = self._stream = ShardStream(self.location)
        try:
            for line, raw, partial in stream:
                rec = (BadRecord("truncated_line", "the shard's stream breaks inside this line")
                       if partial else parse_line(raw, self.text_column))
                yield line, rec, len(raw) + 1
        finally:
            self.sha256, self.size, self.lines = stream.sha256, stream.size, stream.lines


register(JsonLines())
