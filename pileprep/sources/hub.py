"""``hf:NAME[:CONFIG][@SPLIT]``: a Hugging Face ``datasets`` source, streamed.

Opened with ``streaming=True`` (a hub id, or a local directory of data files), one shard per
stream shard of the dataset, named ``hf:NAME[:CONFIG]@SPLIT#k``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from pileprep.core.errors import InputError
from pileprep.sources.base import Shard, ShardError, TableRows, register

HF_PREFIX = "hf:"


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



class HubSource:
    name = "hf"
    suffixes = ()
    prefix = HF_PREFIX
    streamed = True

    def expand(self, spec_text: str) -> list[Shard]:
        spec = HubSpec.parse(spec_text)
        stream = _hub_stream(spec)
        n = max(1, int(getattr(stream, "num_shards", None) or getattr(stream, "n_shards", 1)))
        width = len(str(n - 1))
        return [Shard(f"{spec.label()}#{k:0{width}d}", spec_text, self.name, k, n)
                for k in range(n)]

    def size(self, shard: Shard) -> int:
        return 0  # unknown before reading

    def identity(self, shard: Shard) -> dict:
        return {"spec": shard.location, "part": shard.part, "parts": shard.parts}

    def rows(self, shard: Shard, text_column: str) -> TableRows:
        return TableRows(shard, _hub_rows(shard), text_column)


def _hub_rows(shard: Shard) -> Iterator[dict]:
    ds = _hub_stream(HubSpec.parse(shard.location))
    if shard.parts > 1:
        ds = ds.shard(num_shards=shard.parts, index=shard.part)
    try:
        yield from ds
    except Exception as exc:  # a network or decoding failure mid-stream
        raise ShardError(shard.name, "stream_failed", f"{type(exc).__name__}: {exc}", 0) from None



register(HubSource())
