"""How much of every document the trainer saw by a given step: one row per document.

For a schedule and a step K (default: the last), the training samples ``0 .. K*B-1`` are split
into their document pieces (:mod:`.pieces`) and, per document d of the dataset (unseen ones
included, with zeros):

- ``samples``: distinct training samples holding at least one token of d (d trained in two
  epochs counts twice; a sample holding two copies of d counts once);
- ``tokens_seen``: tokens of d across those pieces, repeats counted;
- ``fraction_seen``: distinct token positions of d covered by at least one piece, over its size
  (the union of the pieces' ``[offset, offset+tokens)`` intervals);
- ``first_step`` / ``last_step``: the first and last step that trained on d, -1 if none.

Why two passes through disk: Pythia trains 147 M samples over 210 M documents, and a sample's
pieces are scattered over the whole dataset (that is what the shuffle is for). Holding every
piece, or even one counter array per document and statistic, does not fit a small machine, and
the interval union needs all the pieces of a document side by side. So pass 1 walks the trained
samples in chunks and appends each piece to a *bucket* file chosen by document range; pass 2
reads one bucket at a time, sorts it with numpy, and yields the rows of that document range in
doc order (:mod:`pileprep.outputs.exposures` writes them). Memory is bounded by one chunk and one bucket, whatever the size of the dataset or
the schedule; disk holds the pieces once (20 bytes each), removed at the end.

The provenance columns (source, line, pile_set_name) are streamed from ``provenance.parquet``
alongside, for the same reason (``TrainingOrder.provenance()`` loads them whole). They are null
where the dataset does not know them (an adopted dataset's unmatched documents).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pileprep.core.errors import ConfigError, IntegrityError
from pileprep.core.progress import Progress
from pileprep.formats import provenance
from pileprep.training import pieces as pieces_of
from pileprep.training.order import TrainingOrder

SCHEMA = pa.schema([
    ("doc", pa.int64()), ("samples", pa.int32()), ("tokens_seen", pa.int64()),
    ("fraction_seen", pa.float64()), ("first_step", pa.int32()), ("last_step", pa.int32()),
    ("source", pa.string()), ("line", pa.int64()), ("pile_set_name", pa.string()),
])
BUCKET_ROWS = 1 << 22  # pieces a bucket is sized for (~80 MB on disk, under 1 GB to process)

# One piece on disk. The document is stored relative to its bucket's first document and the
# offset and length fit int32 (MMIDIDX sizes are int32), so a piece costs 20 bytes.
PIECE = np.dtype([("doc", "<i4"), ("offset", "<i4"), ("tokens", "<i4"), ("sample", "<i8")])

# The counts a summary adds up, per subset and in total.
TOTALS = ("documents", "seen", "seen_twice", "tokens", "tokens_seen", "tokens_covered")


@dataclass
class SubsetExposure:
    """Totals over the documents of one ``pile_set_name`` ("" when unknown or absent)."""

    name: str
    documents: int = 0
    seen: int = 0  # documents with samples >= 1
    seen_twice: int = 0  # documents with samples >= 2
    tokens: int = 0  # tokens of the subset's documents
    tokens_seen: int = 0  # tokens trained on, repeats counted
    tokens_covered: int = 0  # distinct token positions trained on

    def add(self, other: SubsetExposure) -> None:
        for f in TOTALS:
            setattr(self, f, getattr(self, f) + getattr(other, f))


@dataclass
class Summary:
    """What :func:`compute` found: totals over the dataset and per subset (most tokens first)."""

    steps: int  # steps 0 .. steps-1 were counted
    samples: int  # training samples counted: steps * batch_size
    total: SubsetExposure  # over every document (name "total")
    subsets: list[SubsetExposure] = field(default_factory=list)
    max_samples: int = 0  # the most samples any one document appeared in
    output: Path | None = None  # the parquet file written, if any

    def lines(self) -> list[str]:
        """A text table for a terminal: one line per subset, then the total."""
        head = (f"{'subset':<24} {'documents':>12} {'seen':>12} {'seen 2+':>12} "
                f"{'tokens':>16} {'tokens seen':>16} {'covered':>8}")
        rows = [_line(s.name or "(unknown)", s) for s in self.subsets]
        return [f"steps 0..{self.steps - 1} ({self.samples:,} samples)", head, *rows,
                _line("total", self.total)]


def _line(name: str, s: SubsetExposure) -> str:
    share = s.tokens_covered / s.tokens if s.tokens else 0.0
    return (f"{name[:24]:<24} {s.documents:>12,} {s.seen:>12,} {s.seen_twice:>12,} "
            f"{s.tokens:>16,} {s.tokens_seen:>16,} {share:>8.2%}")


@contextlib.contextmanager
def exposure_rows(order: TrainingOrder, until_step: int | None = None,
                  work_dir: str | Path | None = None, quiet: bool = True, *,
                  docs_per_bucket: int | None = None,
                  chunk_samples: int = pieces_of.SAMPLES_AT_ONCE
                  ) -> Iterator[tuple[Summary, Iterator[pa.Table]]]:
    """Exposure of every document to steps ``0 .. until_step-1`` (default: all train_iters):
    ``(summary, tables)``, whose tables hold one row per document (:data:`SCHEMA`) in
    document order, and whose summary is complete once they are consumed.

    Bucket files go to a scratch directory under ``work_dir`` (default: the system's temporary
    folder), removed when the context ends. ``docs_per_bucket`` (default: sized for
    :data:`BUCKET_ROWS` pieces) and ``chunk_samples`` change memory and speed only, never the
    result.
    """
    K = check_until(order, until_step)
    if docs_per_bucket is not None and docs_per_bucket < 1:
        raise ConfigError(f"docs_per_bucket must be positive, got {docs_per_bucket}")
    if chunk_samples < 1:
        raise ConfigError(f"chunk_samples must be positive, got {chunk_samples}")
    dpb = docs_per_bucket or default_docs_per_bucket(order, K)
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".pileprep-exposures-", dir=work_dir))
    try:
        split_into_buckets(order, K * order.cfg.batch_size, dpb, scratch, chunk_samples, quiet)
        summary = Summary(K, K * order.cfg.batch_size, SubsetExposure("total"))
        yield summary, _tallied(summary, bucket_rows(order, dpb, scratch, quiet))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _tallied(summary: Summary, buckets: Iterator["BucketRows"]) -> Iterator[pa.Table]:
    for rows in buckets:
        yield _tally(summary, rows)
    summary.subsets.sort(key=lambda s: (-s.tokens, s.name))


def check_until(order: TrainingOrder, until_step: int | None) -> int:
    """``until_step`` checked against the schedule (1 .. train_iters); None means train_iters."""
    order.require_schedule("exposures")
    T = order.cfg.train_iters
    if until_step is None:
        return T
    if isinstance(until_step, bool) or not isinstance(until_step, (int, np.integer)):
        raise ConfigError(f"the step must be a whole number, got {until_step!r}")
    if not 1 <= until_step <= T:
        raise ConfigError(f"step {until_step} is outside 1..{T} (train_iters={T}): exposures "
                          "count steps 0 .. step-1")
    return int(until_step)


def default_docs_per_bucket(order: TrainingOrder, steps: int) -> int:
    """Documents per bucket so that a bucket holds about :data:`BUCKET_ROWS` pieces.

    A sample of L+1 tokens has one piece plus one per document boundary inside it, about
    L / (mean document size); the pieces spread over documents roughly evenly (each document
    appears once per epoch of the shuffled stream), so a document range gets its share.
    """
    n_docs = len(order.data)
    mean = max(int(order.data.sizes.sum(dtype=np.int64)) / max(n_docs, 1), 1.0)
    pieces = steps * order.cfg.batch_size * (1.0 + order.cfg.seq_length / mean)
    return max(1, min(n_docs, int(n_docs * BUCKET_ROWS / max(pieces, 1.0))))


# -- pass 1: pieces into bucket files ----------------------------------------------------------


def bucket_path(scratch: Path, bucket: int) -> Path:
    return scratch / f"{bucket:08d}.pieces"


def split_into_buckets(order: TrainingOrder, n_samples: int, docs_per_bucket: int,
                       scratch: Path, chunk_samples: int, quiet: bool) -> None:
    """Append the pieces of training samples ``0 .. n_samples-1`` to their buckets' files."""
    bar = Progress("exposures: pieces", 0, -(-n_samples // chunk_samples), quiet=quiet)
    for lo in range(0, n_samples, chunk_samples):
        p = pieces_of.expand(order.schedule, order.sizes,
                             np.arange(lo, min(lo + chunk_samples, n_samples), dtype=np.int64))
        append_pieces(scratch, p, docs_per_bucket)
        bar.update(items=1)
    bar.close()


def append_pieces(scratch: Path, p: pieces_of.Pieces, docs_per_bucket: int) -> None:
    """Group the pieces by bucket (one sort) and append each group to its file."""
    bucket = p.doc // docs_per_bucket
    by_bucket = np.argsort(bucket, kind="stable")
    rec = np.empty(len(by_bucket), PIECE)
    rec["doc"] = p.doc[by_bucket] - bucket[by_bucket] * docs_per_bucket
    rec["offset"] = p.offset[by_bucket]
    rec["tokens"] = p.tokens[by_bucket]
    rec["sample"] = p.sample[by_bucket]
    present, first, count = np.unique(bucket[by_bucket], return_index=True, return_counts=True)
    for b, a, n in zip(present.tolist(), first.tolist(), count.tolist()):
        with open(bucket_path(scratch, b), "ab") as f:
            rec[a:a + n].tofile(f)


# -- pass 2: one bucket at a time ----------------------------------------------------------------


@dataclass
class DocStats:
    """The statistics of consecutive documents (one bucket), as numpy columns."""

    samples: np.ndarray  # int32
    tokens_seen: np.ndarray  # int64
    covered: np.ndarray  # int64: distinct token positions seen
    first_step: np.ndarray  # int32, -1 when unseen
    last_step: np.ndarray  # int32, -1 when unseen


def doc_stats(rec: np.ndarray, n_docs: int, sizes: np.ndarray, batch_size: int) -> DocStats:
    """Statistics of documents ``0 .. n_docs-1`` (bucket-relative) from their pieces ``rec``.

    Everything is a sort of plain int64 keys (``np.sort`` is several times faster than an
    argsort or a lexsort, which matters at millions of pieces per bucket) or a bincount.
    """
    out = DocStats(np.zeros(n_docs, np.int32), np.zeros(n_docs, np.int64),
                   np.zeros(n_docs, np.int64), np.full(n_docs, -1, np.int32),
                   np.full(n_docs, -1, np.int32))
    if not len(rec):
        return out
    doc = rec["doc"].astype(np.int64)
    tokens = rec["tokens"].astype(np.int64)
    d, s = sorted_pairs(doc, rec["sample"])
    new_doc = np.r_[True, d[1:] != d[:-1]]
    new_pair = new_doc | np.r_[True, s[1:] != s[:-1]]  # a distinct sample of its document
    heads = np.flatnonzero(new_doc)
    tails = np.r_[heads[1:], len(d)] - 1
    out.samples[:] = np.bincount(d[new_pair], minlength=n_docs)
    out.first_step[d[heads]] = s[heads] // batch_size
    out.last_step[d[tails]] = s[tails] // batch_size
    out.tokens_seen[:] = sum_by(doc, tokens, n_docs)
    out.covered[:] = covered_tokens(doc, rec["offset"].astype(np.int64), tokens, sizes)
    return out


def sorted_pairs(doc: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (doc, sample) pairs sorted by doc, then sample: one int64 key ``doc*M + sample``
    when it fits (always, short of ~10^18 samples), else a lexsort."""
    M = int(sample.max()) + 1
    if (int(doc.max()) + 1) * M < 1 << 62:
        key = np.sort(doc * M + sample)
        return key // M, key % M
    by = np.lexsort((sample, doc))
    return doc[by], sample[by]


def sum_by(doc: np.ndarray, values: np.ndarray, n_docs: int) -> np.ndarray:
    """Exact int64 sums of ``values`` per document (bincount adds in float64: exact below 2^53)."""
    if int(values.sum()) < 1 << 53:
        return np.rint(np.bincount(doc, weights=values, minlength=n_docs)).astype(np.int64)
    out = np.zeros(n_docs, np.int64)
    np.add.at(out, doc, values)
    return out


def covered_tokens(doc: np.ndarray, offset: np.ndarray, tokens: np.ndarray, sizes: np.ndarray
                   ) -> np.ndarray:
    """Per document, the length of the union of its pieces' ``[offset, offset+tokens)``.

    A sweep over interval ends: document d's positions are placed at ``d*span + position``
    (``span`` > any size, so documents never mix), every start is a +1 event and every end a
    -1 event; sorted (ends before starts at one position: tagged in the lowest bit), the
    running sum is the number of pieces covering each stretch between events, and the
    stretches where it is positive are the covered tokens.
    """
    span = int(sizes.max()) + 1 if len(sizes) else 1
    start = doc * span + offset
    events = np.sort(np.concatenate([(start + tokens) << 1, (start << 1) | 1]))
    pos = events >> 1
    active = np.cumsum(np.where(events & 1, 1, -1))[:-1]
    stretch = np.diff(pos)
    inside = active > 0
    return sum_by(pos[:-1][inside] // span, stretch[inside], len(sizes))


def load_bucket(scratch: Path, bucket: int) -> np.ndarray:
    """A bucket's pieces, read once and deleted (its disk space is freed as pass 2 goes)."""
    path = bucket_path(scratch, bucket)
    if not path.exists():
        return np.zeros(0, PIECE)
    rec = np.fromfile(path, PIECE)
    path.unlink()
    return rec


@dataclass
class BucketRows:
    """One bucket's result rows, with what the summary needs beside them."""

    table: pa.Table  # rows of :data:`SCHEMA`, in doc order
    sizes: np.ndarray  # int64 size of each document
    stats: DocStats


def bucket_rows(order: TrainingOrder, docs_per_bucket: int, scratch: Path, quiet: bool
                ) -> Iterator[BucketRows]:
    """The result rows of every bucket, in doc order (pass 2)."""
    n_docs, B = len(order.data), order.cfg.batch_size
    prov = ProvenanceStream(order.out_dir, n_docs)
    n_buckets = -(-n_docs // docs_per_bucket)
    bar = Progress("exposures: documents", 0, n_buckets, quiet=quiet)
    for b in range(n_buckets):
        lo, hi = b * docs_per_bucket, min((b + 1) * docs_per_bucket, n_docs)
        sizes = np.asarray(order.data.sizes[lo:hi], np.int64)
        stats = doc_stats(load_bucket(scratch, b), hi - lo, sizes, B)
        yield BucketRows(rows_table(lo, sizes, stats, prov.take(hi - lo)), sizes, stats)
        bar.update(items=1)
    bar.close()


def rows_table(lo: int, sizes: np.ndarray, st: DocStats, prov: tuple) -> pa.Table:
    """The rows of documents ``lo .. lo+len(sizes)-1``."""
    fraction = np.divide(st.covered, sizes, out=np.zeros(len(sizes)), where=sizes > 0)
    source, line, subset = prov
    return pa.table({
        "doc": pa.array(np.arange(lo, lo + len(sizes), dtype=np.int64)),
        "samples": pa.array(st.samples), "tokens_seen": pa.array(st.tokens_seen),
        "fraction_seen": pa.array(fraction), "first_step": pa.array(st.first_step),
        "last_step": pa.array(st.last_step), "source": source, "line": line,
        "pile_set_name": subset,
    }, schema=SCHEMA)


class ProvenanceStream:
    """The provenance columns read in doc order, ``take(n)`` rows at a time, one row group in
    memory; all null when the build has no provenance table."""

    COLUMNS = ("source", "line", "pile_set_name")
    TYPES = (pa.string(), pa.int64(), pa.string())

    def __init__(self, out_dir: Path, n_docs: int):
        path = Path(out_dir) / provenance.FILE_NAME
        self.batches: Iterator[pa.RecordBatch] | None = None
        self.pending: pa.Table | None = None
        if path.exists():
            f = pq.ParquetFile(path)
            if f.metadata.num_rows != n_docs:
                raise IntegrityError(f"{path} has {f.metadata.num_rows} rows for {n_docs} documents")
            self.batches = f.iter_batches(batch_size=1 << 16, columns=list(self.COLUMNS))

    def take(self, n: int) -> tuple[pa.Array, pa.Array, pa.Array]:
        """The next ``n`` rows' (source, line, pile_set_name), as string, int64, string."""
        if self.batches is None or n == 0:
            return tuple(pa.nulls(n, t) for t in self.TYPES)
        parts, have = [], 0
        while have < n:
            if self.pending is None or not self.pending.num_rows:
                self.pending = pa.Table.from_batches([next(self.batches)])
            part = self.pending.slice(0, n - have)
            self.pending = self.pending.slice(part.num_rows)
            parts.append(part)
            have += part.num_rows
        t = pa.concat_tables(parts)
        return tuple(t.column(c).combine_chunks().cast(typ) for c, typ in zip(self.COLUMNS, self.TYPES))


# -- output and summary --------------------------------------------------------------------------


def _tally(summary: Summary, rows: BucketRows) -> pa.Table:
    """Add one bucket's rows to the summary's totals; return its table."""
    if len(rows.stats.samples):
        summary.max_samples = max(summary.max_samples, int(rows.stats.samples.max()))
    for part in subset_totals(rows):
        summary.total.add(part)
        mine = next((s for s in summary.subsets if s.name == part.name), None)
        if mine is None:
            summary.subsets.append(part)
        else:
            mine.add(part)
    return rows.table


def subset_totals(rows: BucketRows) -> list[SubsetExposure]:
    """Per ``pile_set_name`` (null counted as "": unknown, as in lookups), these rows' totals."""
    st, n = rows.stats, len(rows.sizes)
    grouped = pa.table({
        "name": pc.fill_null(rows.table.column("pile_set_name"), ""),
        "documents": pa.array(np.ones(n, np.int64)),
        "seen": pa.array((st.samples >= 1).astype(np.int64)),
        "seen_twice": pa.array((st.samples >= 2).astype(np.int64)),
        "tokens": pa.array(rows.sizes), "tokens_seen": pa.array(st.tokens_seen),
        "tokens_covered": pa.array(st.covered),
    }).group_by("name").aggregate([(f, "sum") for f in TOTALS])
    names = grouped.column("name").to_pylist()
    cols = [grouped.column(f"{f}_sum").to_pylist() for f in TOTALS]
    return [SubsetExposure(name, *(int(c[i]) for c in cols)) for i, name in enumerate(names)]
