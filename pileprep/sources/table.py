"""Parquet and Arrow files (``datasets.save_to_disk`` writes Arrow streams): rows as records."""

from __future__ import annotations

from typing import Iterator

from pileprep.sources import files
from pileprep.sources.base import Shard, ShardError, TableRows, register

_TABLE_BATCH = 1024  # rows decoded at once


class Tables(files.FileKind):
    """Parquet and Arrow IPC files: one row per document."""

    name = "table"
    suffixes = (".parquet", ".arrow")

    def rows(self, shard: Shard, text_column: str) -> TableRows:
        return TableRows(shard, _table_rows(shard), text_column,
                         file_hash=lambda: files.sha256(shard.location))


def _table_rows(shard: Shard) -> Iterator[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = shard.location
    try:
        with files.open_binary(path) as f:
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



register(Tables())
