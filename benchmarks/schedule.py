"""Pile-scale schedule benchmark: build GPT-NeoX's index for 210 M documents / 300 B tokens.

Synthetic document sizes (log-normal, scaled to the total) stand in for the Pile; the `.bin` is
a sparse file of the right length, so `batch-at` reads real offsets without 600 GB of disk.
Prints the schedule build time and peak RSS, and the time of a few `batch-at` steps; with
`--queries`, every query command's wall time and peak RSS, each in its own process; with
`--cold` as well, `batch-at` on a page cache emptied of the workdir's files, then warm.

    python benchmarks/schedule.py [--docs 210000000] [--tokens 300000000000] [--workdir bench-out/schedule]
    python benchmarks/schedule.py --reuse --queries --cold [--seen-steps 0:4096] --workdir ...
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

from memory import machine

from pileprep.core.files import data_path, index_path
from pileprep.formats import indexed
from pileprep.training import schedule, schedule_files
from pileprep.core.config import ScheduleConfig
from pileprep.training.order import TrainingOrder


def synthetic_sizes(n_docs: int, n_tokens: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(6.5, 1.2, size=n_docs)
    sizes = np.maximum(1, (raw * (n_tokens / raw.sum()))).astype(np.int32)
    sizes[: n_tokens - int(sizes.sum(dtype=np.int64))] += 1  # hit the total exactly
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=210_000_000)
    ap.add_argument("--tokens", type=int, default=300_000_000_000)
    ap.add_argument("--workdir", default="bench-out/schedule")
    ap.add_argument("--reuse", action="store_true", help="time batch-at on an existing build only")
    ap.add_argument("--queries", action="store_true",
                    help="also run verify, batch-at, where --doc, seen and export as commands, "
                    "each in its own process, with its wall time and peak RSS")
    ap.add_argument("--cold", action="store_true",
                    help="with --queries: also time batch-at with the workdir's files evicted "
                    "from the page cache (cold), then again (warm)")
    ap.add_argument("--seen-steps", default="0:4096",
                    help="the long step range `seen` and `plot` are timed over (with --queries; "
                    "0:143000 is Pythia's whole run: about 10 s per 1,024 steps on 2 cores)")
    args = ap.parse_args()
    out = Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    cfg = ScheduleConfig()  # Pythia: L=2048, B=1024, T=143000, seed 1234
    if not args.reuse:
        build_schedule(out, args, cfg)
    time_batches(out, cfg)
    if args.queries:
        time_queries(out, args.seen_steps)
        if args.cold:
            time_cold_batch(out)


def write_dataset(out: Path, n_docs: int, n_tokens: int) -> Path:
    """The `.idx` of synthetic sizes, a sparse `.bin` and a minimal manifest; returns the prefix."""
    sizes = synthetic_sizes(n_docs, n_tokens)
    prefix = out / "pile_text_document"
    chunks = [sizes[i:i + (1 << 24)] for i in range(0, len(sizes), 1 << 24)]
    with open(index_path(prefix), "wb") as f:
        indexed.write_index(f, np.uint16, len(sizes), lambda: iter(chunks))
    with open(data_path(prefix), "wb") as f:
        f.truncate(int(sizes.sum(dtype=np.int64)) * 2)  # sparse: no disk used
    (out / "manifest.json").write_text(json.dumps({"settings": {"pack": {"name": "pile"}}}))
    return prefix


def build_schedule(out: Path, args, cfg: ScheduleConfig) -> None:
    prefix = write_dataset(out, args.docs, args.tokens)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    data = indexed.IndexedDataset(prefix)
    s = schedule.build(data.sizes, cfg)
    t_build = time.perf_counter() - t0
    schedule_files.save(s, prefix)
    schedule_files.record(out, cfg)
    t_total = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{args.docs:,} documents, {args.tokens:,} tokens -> {s.epochs} epochs, "
          f"doc_idx {len(s.doc_idx):,}, samples {len(s.sample_idx) - 1:,}")
    print(f"schedule build: {t_build:.1f} s, with saving: {t_total:.1f} s; peak RSS "
          f"{peak / (1 << 20):.2f} GiB (before the build: {base_rss / (1 << 20):.2f} GiB)")


def time_batches(out: Path, cfg: ScheduleConfig) -> None:
    t0 = time.perf_counter()
    order = TrainingOrder(out, cfg)
    order.batch(3000)
    print(f"batch-at: open + step 3000: {time.perf_counter() - t0:.3f} s")
    for step in (3001, 3002, 3001):
        t0 = time.perf_counter()
        batch = order.batch(step)
        print(f"batch-at: step {step} (open dataset): {time.perf_counter() - t0:.3f} s, shape {batch.shape}")



def synthetic_provenance(out: Path) -> None:
    """provenance.parquet for the synthetic dataset: 30 shards, lines in order, five subsets."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pileprep.formats import provenance

    path = out / "provenance.parquet"
    if path.exists():
        return
    sizes = indexed.IndexedDataset(out / "pile_text_document").sizes
    per_shard = -(-len(sizes) // 30)
    names = pa.array(["Pile-CC", "Github", "ArXiv", "PubMed Central", "FreeLaw"])
    shards = pa.array([f"{i:02d}.jsonl.zst" for i in range(30)])
    token = 0
    with pq.ParquetWriter(path, provenance.SCHEMA, compression="zstd") as w:
        for lo in range(0, len(sizes), provenance.ROW_GROUP):
            n = min(provenance.ROW_GROUP, len(sizes) - lo)
            doc = np.arange(lo, lo + n, dtype=np.int64)
            tokens = np.asarray(sizes[lo:lo + n], np.int64)
            w.write_table(pa.table({
                "doc": doc, "source": shards.take(pa.array(doc // per_shard)),
                "line": doc % per_shard, "pile_set_name": names.take(pa.array(doc % 5)),
                "tokens": tokens.astype(np.int32), "token_start": np.cumsum(tokens) - tokens + token,
                "bytes": tokens * 4}, schema=provenance.SCHEMA))
            token += int(tokens.sum())


def time_queries(out: Path, seen_steps: str) -> None:
    """Each query command in its own process: wall time and the peak RSS of that process."""
    t0 = time.perf_counter()
    synthetic_provenance(out)
    print(f"\nsynthetic provenance.parquet ready in {time.perf_counter() - t0:.1f} s")
    d = str(out)
    for args in (["batch-at", d, "--step", "3000"],  # the first builds the provenance lookup
                 ["batch-at", d, "--step", "3001"],
                 ["where", d, "--doc", "07.jsonl.zst:123456"],
                 ["seen", d, "--steps", "3000:3010"],
                 ["seen", d, "--steps", seen_steps],
                 ["plot", d, "--steps", seen_steps, "--output", str(out / "mix.png")],
                 ["export", d, "--steps", "3000:3001", "--format", "parquet", "--output", str(out / "e.parquet")],
                 ["verify", d]):
        if args[0] == "export":
            (out / "e.parquet").unlink(missing_ok=True)
        print(f"{' '.join(args[:1] + args[2:4])}: {_timed(args)}")


def _timed(args: list[str]) -> str:
    from memory import run_sampled

    elapsed, peaks, _ = run_sampled(args, quiet_output=True)
    peak = max(p for _, p in peaks.values())
    return f"{elapsed:.2f} s, peak RSS {peak / (1 << 30):.2f} GiB"


def evict(root: Path) -> int:
    """Drop every file under ``root`` from the page cache (clean pages only, which is all a
    query leaves): the next read of them goes to the disk. Returns the files evicted."""
    n = 0
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            n += 1
    return n


def time_cold_batch(out: Path) -> None:
    """``batch-at`` on a cold page cache (the workdir's files evicted just before), then warm.
    Wall time includes Python's start-up; the start-up alone (``pileprep --help``) is
    printed for reference."""
    print(f"\nstart-up alone (pileprep --help): {_timed(['--help'])}")
    for step in ("5000", "7000"):
        args = ["batch-at", str(out), "--step", step]
        files = evict(out)
        print(f"batch-at --step {step} cold ({files} files evicted): {_timed(args)}")
        print(f"batch-at --step {step} warm: {_timed(args)}")


if __name__ == "__main__":
    main()
