"""Stage 1, ingest: stream one shard into bounded partition files of validated records.

A Pile shard is one zstd stream that cannot be entered in the middle, so it is read once, in
order, and cut into partitions of about ``partition_bytes`` of JSON. Later stages work on
partitions, which makes their parallelism independent of the number or size of shards.

A partition is a parquet file with columns ``line`` (0-based line in the shard), ``text`` and
``pile_set_name``. Bad lines never reach a partition: each is written to the shard's rejects
file with its reason, or, with ``strict``, stops the build with :class:`BadRecordError`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from . import atomic
from .config import ReadConfig
from .reader import BadRecord, ShardError, ShardStream, parse_line, shard_name

PARTITION_SCHEMA = pa.schema([
    ("line", pa.int64()),
    ("text", pa.large_string()),
    ("pile_set_name", pa.string()),
])
_DETAIL_CHARS = 300


class BadRecordError(Exception):
    """Strict mode: the first bad record, naming file and line."""

    def __init__(self, source: str, line: int, reason: str, detail: str):
        super().__init__(source, line, reason, detail)
        self.source, self.line, self.reason, self.detail = source, line, reason, detail

    def __str__(self) -> str:
        return f"{self.source}: line {self.line} (0-based): {self.reason}: {self.detail}"


@dataclass
class Partition:
    path: str
    source: str
    shard_index: int
    index: int
    first_line: int
    rows: int
    text_bytes: int


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

    @classmethod
    def from_json(cls, obj: dict) -> "ShardResult":
        obj = dict(obj)
        obj["partitions"] = [Partition(**p) for p in obj["partitions"]]
        return cls(**obj)


class _PartitionWriter:
    def __init__(self, workdir: Path, source: str, shard_index: int, limit: int):
        self.workdir, self.source, self.shard_index, self.limit = workdir, source, shard_index, limit
        self.done: list[Partition] = []
        self._reset()

    def _reset(self) -> None:
        self.lines: list[int] = []
        self.texts: list[str] = []
        self.subsets: list[str] = []
        self.bytes = 0

    def add(self, line: int, text: str, subset: str, raw_len: int) -> None:
        self.lines.append(line)
        self.texts.append(text)
        self.subsets.append(subset)
        self.bytes += raw_len
        if self.bytes >= self.limit:
            self.flush()

    def flush(self) -> None:
        if not self.lines:
            return
        index = len(self.done)
        path = self.workdir / f"{self.source}.{index:05d}.parquet"
        table = pa.table([self.lines, self.texts, self.subsets], schema=PARTITION_SCHEMA)
        with atomic.atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd", compression_level=1,
                           row_group_size=4096)
        self.done.append(Partition(str(path), self.source, self.shard_index, index,
                                   self.lines[0], len(self.lines), self.bytes))
        self._reset()


def ingest_shard(path: str, shard_index: int, workdir: str, cfg: ReadConfig) -> ShardResult:
    """Read one shard into partitions; return what was read, kept and rejected."""
    work = Path(workdir)
    source = shard_name(Path(path))
    writer = _PartitionWriter(work, source, shard_index, cfg.partition_bytes)
    stream = ShardStream(Path(path))
    rejected: dict[str, int] = {}
    rejects = work / f"{source}.rejects.jsonl"
    shard_error = None
    with atomic.atomic_path(rejects) as tmp, open(tmp, "wb") as rej:
        def reject(line: int, reason: str, detail: str) -> None:
            if cfg.strict:
                raise BadRecordError(source, line, reason, detail)
            rejected[reason] = rejected.get(reason, 0) + 1
            rej.write(orjson.dumps({"source": source, "line": line, "reason": reason,
                                    "detail": detail[:_DETAIL_CHARS]}) + b"\n")

        try:
            for line, raw, partial in stream:
                if partial:
                    reject(line, "truncated_line", "the shard's stream breaks inside this line")
                    continue
                rec = parse_line(raw)
                if isinstance(rec, BadRecord):
                    reject(line, rec.reason, rec.detail)
                else:
                    writer.add(line, rec.text, rec.pile_set_name, len(raw) + 1)
        except ShardError as exc:
            if cfg.strict:
                raise BadRecordError(source, exc.line, exc.reason, exc.detail) from None
            shard_error = {"reason": exc.reason, "detail": exc.detail, "after_lines": exc.line}
        writer.flush()
    accepted = sum(p.rows for p in writer.done)
    return ShardResult(source, str(path), stream.size, stream.sha256, stream.lines, accepted,
                       dict(sorted(rejected.items())), str(rejects), writer.done, shard_error)


def result_to_json(result: ShardResult) -> dict:
    return dataclasses.asdict(result)
