"""The exposures table: one row per document (:data:`SCHEMA`) of how much of it the trainer saw by
a step, written as parquet (rows from :func:`pileprep.training.exposures.exposure_rows`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pileprep.core.atomic import atomic_path
from pileprep.core.errors import ConfigError
from pileprep.training.exposures import SCHEMA, Summary, exposure_rows
from pileprep.training.order import TrainingOrder

ROW_GROUP = 1 << 20  # rows per written row group: the file does not depend on the bucket size

__all__ = ["SCHEMA", "compute", "write"]


def compute(order: TrainingOrder, until_step: int | None = None,
            output: str | Path | None = None, work_dir: str | Path | None = None,
            quiet: bool = True, **sizes) -> Summary:
    """The exposure summary to ``until_step``; with ``output``, every document's row written
    there too (parquet, atomically). Scratch goes under ``work_dir`` (default: the output's
    folder). ``sizes`` (``docs_per_bucket``, ``chunk_samples``) change memory and speed only."""
    output = Path(output) if output is not None else None
    if output is not None and output.suffix != ".parquet":
        raise ConfigError(f"--output must end in .parquet, not {str(output)!r}")
    root = work_dir if work_dir is not None else (output.parent if output else None)
    with exposure_rows(order, until_step, root, quiet, **sizes) as (summary, tables):
        if output is None:
            for _ in tables:
                pass
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            write(output, tables)
            summary.output = output
    return summary


def write(output: Path, tables: Iterator[pa.Table]) -> None:
    """Write the rows to ``output`` atomically, in row groups of :data:`ROW_GROUP` rows (so the
    file does not depend on how the rows were bucketed)."""
    with atomic_path(output) as tmp, pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as writer:
        pending: list[pa.Table] = []
        rows = 0
        for table in tables:
            pending.append(table)
            rows += table.num_rows
            while rows >= ROW_GROUP:  # concatenated only when a group is full: linear
                pending = _write_group(writer, pending, ROW_GROUP)
                rows -= ROW_GROUP
        if rows:
            _write_group(writer, pending, rows)


def _write_group(writer, pending: list[pa.Table], n: int) -> list[pa.Table]:
    """Write the first ``n`` pending rows as one row group; return the rest."""
    buf = pa.concat_tables(pending)
    writer.write_table(buf.slice(0, n).combine_chunks(), row_group_size=n)
    return [buf.slice(n)] if buf.num_rows > n else []
