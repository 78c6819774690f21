"""The intermediate files between stages, described: what one task hands to the next.

These small value classes travel through Dask (as task results) and through completion records
(as JSON), so they hold counts and paths, never data. ``outputs()`` names the files a later run
must find to reuse the task.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

# An ingest partition: validated records of one shard, in line order.
PARTITION_SCHEMA = pa.schema([
    ("line", pa.int64()),
    ("text", pa.large_string()),
    ("pile_set_name", pa.string()),
])


@dataclass
class Partition:
    path: str
    source: str
    shard_index: int
    index: int
    first_line: int
    rows: int
    text_bytes: int

    @property
    def stem(self) -> str:
        """The partition's file name without ``.parquet``: names its files in later stages."""
        return Path(self.path).name.removesuffix(".parquet")


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
    # for work dirs already written), it holds build.pipeline.shard_key: the shard's identity,
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
