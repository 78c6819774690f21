"""Export training sequences of a step range, with their provenance, for other tools.

One row per training sample: ``step``, ``row`` (position in the global batch), ``sample``
(training sample number), ``tokens`` (the L+1 tokens the trainer read), optionally ``text``
(decoded), and ``sources``: the documents the tokens came from, as a list of
``{source, line, pile_set_name, doc, doc_start, doc_end, row_start, row_end}`` (token ranges,
end exclusive). Formats:

- ``parquet``: one file, readable by ``datasets.load_dataset("parquet", data_files=...)``;
- ``jsonl``: one file, readable by ``datasets.load_dataset("json", data_files=...)``;
- ``hf``: a ``datasets.Dataset.save_to_disk`` directory, readable by ``datasets.load_from_disk``;
- ``memorization``: a memorization test set, one row per training sample with ``step``, ``row``,
  ``sample``, ``prefix`` (its first ``prefix`` tokens), ``continuation`` (the ``suffix``
  tokens after them: what greedy generation from the prefix is scored against) and the sources
  of each part (``prefix_sources``, ``continuation_sources``: the source records clipped to
  the part, row ranges within the training row); parquet, or jsonl for a ``.jsonl`` target.

Rows are produced in chunks, so memory does not grow with the number of steps.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pileprep.core import atomic
from pileprep.core.errors import ConfigError
from pileprep.formats import indexed
from pileprep.training.order import TrainingOrder, group_by_sample

FORMATS = ("parquet", "jsonl", "hf", "memorization")
_ROWS = 1024  # samples per written chunk

SOURCE_FIELDS = ("source", "line", "pile_set_name", "doc", "doc_start", "doc_end",
                 "row_start", "row_end")
SOURCE_TYPE = pa.struct([
    ("source", pa.string()), ("line", pa.int64()), ("pile_set_name", pa.string()),
    ("doc", pa.int64()), ("doc_start", pa.int64()), ("doc_end", pa.int64()),
    ("row_start", pa.int64()), ("row_end", pa.int64()),
])


def schema(token_type: pa.DataType, with_text: bool) -> pa.Schema:
    fields = [("step", pa.int64()), ("row", pa.int64()), ("sample", pa.int64()),
              ("tokens", pa.list_(token_type))]
    fields += [("text", pa.string())] if with_text else []
    return pa.schema(fields + [("sources", pa.list_(SOURCE_TYPE))])


def tables(order: TrainingOrder, first_step: int, end_step: int, tokenizer=None
           ) -> Iterator[pa.Table]:
    """The export rows as Arrow tables of at most ``_ROWS`` samples, in training order."""
    order.check_steps(first_step, end_step)
    B, width = order.cfg.batch_size, order.cfg.seq_length + 1
    token_type = pa.from_numpy_dtype(order.data.dtype)
    sch = schema(token_type, tokenizer is not None)
    for lo in range(first_step * B, end_step * B, _ROWS):
        ns = np.arange(lo, min(lo + _ROWS, end_step * B))
        p = order.pieces(ns)
        flat = order.tokens_of(p)
        cols = {"step": ns // B, "row": ns % B, "sample": ns,
                "tokens": pa.ListArray.from_arrays(
                    pa.array(np.arange(len(ns) + 1, dtype=np.int32) * width),
                    pa.array(flat, token_type))}
        if tokenizer is not None:
            cols["text"] = tokenizer.decode_batch(flat.reshape(len(ns), width).tolist(),
                                                  skip_special_tokens=False)
        cols["sources"] = [[{k: rec[k] for k in SOURCE_FIELDS} for rec in row]
                           for row in order.sources_of(ns, p)]
        yield pa.table(cols, schema=sch)


def export(order: TrainingOrder, first_step: int, end_step: int, target: str | Path, fmt: str,
           tokenizer=None, prefix: int = 32, suffix: int = 32) -> int:
    """Write steps ``first_step .. end_step-1`` to ``target`` in ``fmt``; return rows written."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    target = Path(target)
    if fmt == "hf":
        return _export_hf(order, first_step, end_step, target, tokenizer)
    if fmt == "memorization":
        parts = memorization_tables(order, first_step, end_step, prefix, suffix)
        return _write(parts, target, "jsonl" if target.suffix == ".jsonl" else "parquet")
    return _write(tables(order, first_step, end_step, tokenizer), target, fmt)


def _write(parts: Iterator[pa.Table], target: Path, fmt: str) -> int:
    """The tables to one parquet or JSON-lines file, atomically; the rows written."""
    rows = 0
    with atomic.atomic_path(target) as tmp:
        if fmt == "parquet":
            writer = None
            for t in parts:
                writer = writer or pq.ParquetWriter(tmp, t.schema, compression="zstd")
                writer.write_table(t)
                rows += t.num_rows
            writer.close()
        else:
            with open(tmp, "wb") as f:
                for t in parts:
                    for rec in t.to_pylist():
                        f.write(orjson.dumps(rec) + b"\n")
                    rows += t.num_rows
    return rows


def memorization_tables(order: TrainingOrder, first_step: int, end_step: int, prefix: int,
                        suffix: int) -> Iterator[pa.Table]:
    """Memorization rows (see the module docstring) of steps ``first_step .. end_step-1``, at
    most ``_ROWS`` samples per table, in training order."""
    width = order.cfg.seq_length + 1
    if prefix < 1 or suffix < 1 or prefix + suffix > width:
        raise ConfigError(f"--prefix and --suffix must be at least 1 and add up to at most "
                          f"{width} (seq_length + 1), not {prefix} and {suffix}")
    order.check_steps(first_step, end_step)
    B = order.cfg.batch_size
    token_type = pa.from_numpy_dtype(order.data.dtype)
    for lo in range(first_step * B, end_step * B, _ROWS):
        ns = np.arange(lo, min(lo + _ROWS, end_step * B))
        p = order.pieces(ns)
        flat = order.tokens_of(p).reshape(len(ns), width)
        sources = order.sources_of(ns, p)
        yield pa.table({
            "step": ns // B, "row": ns % B, "sample": ns,
            "prefix": _lists(flat[:, :prefix], token_type),
            "continuation": _lists(flat[:, prefix:prefix + suffix], token_type),
            "prefix_sources": pa.array([clip(r, 0, prefix) for r in sources], pa.list_(SOURCE_TYPE)),
            "continuation_sources": pa.array([clip(r, prefix, prefix + suffix) for r in sources],
                                             pa.list_(SOURCE_TYPE)),
        })


def _lists(rows: np.ndarray, token_type: pa.DataType) -> pa.ListArray:
    offsets = np.arange(len(rows) + 1, dtype=np.int32) * rows.shape[1]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(rows.reshape(-1), token_type))


def clip(records: list[dict], a: int, b: int) -> list[dict]:
    """The source records of one row cut to row tokens ``a .. b-1`` (pieces outside dropped)."""
    out = []
    for rec in records:
        lo, hi = max(rec["row_start"], a), min(rec["row_end"], b)
        if lo < hi:  # a piece of unknown source has no document range
            known = rec["doc_start"] is not None
            start = rec["doc_start"] + lo - rec["row_start"] if known else None
            out.append({**{k: rec[k] for k in SOURCE_FIELDS}, "doc_start": start,
                        "doc_end": start + hi - lo if known else None, "row_start": lo,
                        "row_end": hi})
    return out


def _export_hf(order: TrainingOrder, first_step: int, end_step: int, target: Path,
               tokenizer) -> int:
    """``save_to_disk`` layout, built from a temporary parquet file, moved in when complete."""
    import datasets

    if target.exists():
        raise ConfigError(f"{target} already exists; remove it or choose another --output")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        parquet = Path(tmp) / "rows.parquet"
        rows = export(order, first_step, end_step, parquet, "parquet", tokenizer)
        ds = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(Path(tmp) / "cache"))
        ds.save_to_disk(str(Path(tmp) / "dataset"))
        del ds
        shutil.move(str(Path(tmp) / "dataset"), target)
    return rows


def write_seen(order: TrainingOrder, seen, target: str | Path) -> None:
    """One row per document seen in a step range (``pileprep seen --output``): parquet or csv,
    written a chunk of documents at a time (a range may have seen every document)."""
    import pyarrow.csv as pcsv

    target = str(target)
    if not target.endswith((".parquet", ".csv")):
        raise ConfigError(f"--output must end in .parquet or .csv, not {target!r}")
    with atomic.atomic_path(target) as tmp:
        writer = None
        try:
            for lo in range(0, max(len(seen.docs), 1), _SEEN_ROWS):
                table = _seen_rows(order, seen, lo, min(lo + _SEEN_ROWS, len(seen.docs)))
                if writer is None:
                    writer = (pq.ParquetWriter(tmp, table.schema, compression="zstd")
                              if target.endswith(".parquet") else pcsv.CSVWriter(tmp, table.schema))
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()


_SEEN_ROWS = 1 << 22


def _seen_rows(order: TrainingOrder, seen, lo: int, hi: int) -> pa.Table:
    # indexed.rows: a map of just these rows when the arrays are maps of whole files
    docs = indexed.rows(seen.docs, lo, hi).astype(np.int64)
    source, line, subset = order.provenance().get(docs)
    return pa.table({"doc": docs, "source": pa.array(source, pa.string()),
                     "line": pa.array(np.where(line >= 0, line, 0), mask=line < 0),
                     "pile_set_name": pa.array(subset, pa.string()),
                     "tokens_seen": indexed.rows(seen.tokens_seen, lo, hi).astype(np.int64),
                     "first_step": indexed.rows(seen.first_step, lo, hi).astype(np.int64)})
