"""n-gram index benchmark (issue #16): index build rate and size, query latency, Pile projection.

A synthetic dataset of ``--tokens`` uint16 tokens (documents of log-normal length ending with
EOD 0, token ids drawn Zipf-like over a 50k vocabulary so frequent and rare n-grams both
occur) is written as ``.bin/.idx`` with one GPT-NeoX schedule (seq 2048, batch 1024, about one
epoch). Then:

1. one shard sorted in this process: per-core rate and peak RSS of a worker's task;
2. ``pileprep index`` over the whole dataset with ``--workers`` Dask workers: wall rate and
   bytes per token;
3. queries: n-grams of 1-8 tokens taken at random positions (so they occur); the latency of
   one corpus count, of one training count over every step (10 bins), of a 1,000-query batch of
   both, and of the index part of ``where --text`` (documents holding a sequence);
4. the projection to the Pile's 300 B tokens on one 64-core node.

    python benchmarks/ngram.py [--tokens 1000000000] [--workdir /tmp/bench-ngram] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from memory import machine

from pileprep.build.index import build_index, index_shard
from pileprep.core import atomic
from pileprep.core.config import ClusterConfig, ScheduleConfig
from pileprep.core.files import MANIFEST, data_path, dataset_prefix, index_path
from pileprep.formats import indexed, suffix
from pileprep.training import schedule_files
from pileprep.training.lookups import _indexed_candidates
from pileprep.training.ngram import Counter
from pileprep.training.order import TrainingOrder

PILE_TOKENS = 300_000_000_000
NAME = "bench"


def write_dataset(out: Path, n_tokens: int, seed: int = 0) -> None:
    """``.bin`` in chunks of ~64 M tokens, then the ``.idx`` from the document sizes."""
    rng = np.random.default_rng(seed)
    prefix = dataset_prefix(out, NAME)
    sizes_all = []
    with open(data_path(prefix), "wb") as f:
        done = 0
        while done < n_tokens:
            want = min(1 << 26, n_tokens - done)
            sizes = np.maximum(2, rng.lognormal(6.3, 1.1, size=want // 600 + 16).astype(np.int64))
            sizes = sizes[np.cumsum(sizes) <= want]
            sizes = np.append(sizes, want - sizes.sum()) if want > sizes.sum() else sizes
            tokens = (rng.zipf(1.15, size=want) % 50_000).astype(np.uint16)
            tokens[tokens == 0] = 1
            tokens[np.cumsum(sizes) - 1] = 0  # EOD ends every document, and only there
            tokens.tofile(f)
            sizes_all.append(sizes.astype(np.int32))
            done += want
    sizes = np.concatenate(sizes_all)
    with open(index_path(prefix), "wb") as f:
        indexed.write_index(f, np.uint16, len(sizes), lambda: [sizes])
    atomic.write_json(out / MANIFEST, {"settings": {"pack": {"name": NAME}}})


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1_000_000_000)
    ap.add_argument("--workdir", default="/tmp/bench-ngram")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-tokens", type=int, default=suffix.DEFAULT_SHARD_TOKENS)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--keep", action="store_true", help="keep the workdir (default: delete it)")
    args = ap.parse_args()
    out = Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    prefix = dataset_prefix(out, NAME)
    if not index_path(prefix).exists():
        _, dt = timed(write_dataset, out, args.tokens)
        print(f"dataset: {args.tokens:,} tokens written in {dt:.1f} s")
    data = indexed.IndexedDataset(prefix)
    cfg = ScheduleConfig(seq_length=2048, batch_size=1024, seed=1234,
                         train_iters=max(1, int(0.98 * len(data.tokens)) // (2048 * 1024)))
    if schedule_files.find(prefix, cfg) is None:
        schedule_files.build_for_dataset(out, prefix, cfg, quiet=True)
    print(f"dataset: {len(data):,} documents, {len(data.tokens):,} tokens; schedule "
          f"{cfg.train_iters} steps x {cfg.batch_size} x {cfg.seq_length + 1}")

    one_shard(prefix, data, args.shard_tokens, out)
    meta = build_index(out, ClusterConfig(workers=args.workers), args.shard_tokens, quiet=True)
    wall = meta["wall_seconds"]
    per_core = meta["tokens"] / max(meta["task_seconds"], 1e-9)
    print(f"index: {meta['tokens']:,} tokens, {len(meta['shards'])} shards, {meta['bytes']:,} bytes "
          f"({meta['bytes'] / meta['tokens']:.2f} bytes/token) in {wall:.1f} s wall with "
          f"{args.workers} workers ({meta['tokens'] / max(wall, 1e-9) / 1e6:.2f} M tokens/s; "
          f"{per_core / 1e6:.2f} M tokens/s per busy core)" if not meta["reused"] else "index: reused")
    queries(out, data, cfg, args.queries)
    hours = PILE_TOKENS / (64 * per_core) / 3600
    print(f"projection, Pile ({PILE_TOKENS / 1e9:.0f} B tokens) on one 64-core node: "
          f"{PILE_TOKENS * 4 / 1e12:.1f} TB of suffix arrays beside the 0.6 TB .bin, "
          f"{hours:.1f} h at {per_core / 1e6:.2f} M tokens/s per core "
          f"({PILE_TOKENS // args.shard_tokens:,} shards of {args.shard_tokens:,} tokens)")
    if not args.keep:
        shutil.rmtree(out)


def one_shard(prefix: Path, data, shard_tokens: int, out: Path) -> None:
    """The first shard sorted in a process of its own: a worker's rate and memory."""
    d0, d1, t0, t1 = suffix.shard_ranges(data.sizes, shard_tokens)[0]
    target = out / "probe.sa"
    child = multiprocessing.get_context("spawn").Process(
        target=index_shard, args=(str(prefix), d0, d1, t0, t1, str(target)))
    t_start = time.perf_counter()
    child.start()
    child.join()
    dt = time.perf_counter() - t_start
    target.unlink()
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"one shard in a fresh process: {t1 - t0:,} tokens in {dt:.1f} s "
          f"({(t1 - t0) / dt / 1e6:.2f} M tokens/s, process start included); peak RSS {rss:,.0f} MB")


def queries(out: Path, data, cfg: ScheduleConfig, n_queries: int) -> None:
    rng = np.random.default_rng(1)
    order = TrainingOrder(out, cfg, data=data)
    index = suffix.SuffixIndex(out, data)
    tokens = data.tokens
    qs = []
    while len(qs) < n_queries:
        m = int(rng.integers(1, 9))
        p = int(rng.integers(0, len(tokens) - m))
        q = np.asarray(tokens[p:p + m]).tolist()
        if 0 not in q:
            qs.append(q)
    rare = max(qs, key=len)
    _, dt = timed(index.count, rare)
    print(f"query: corpus count of one {len(rare)}-gram: {dt * 1e3:.1f} ms")
    # a unigram of at most a million occurrences: a Zipf head token (10^8 of them) takes
    # minutes, one unit of 2^20 positions after another
    frequent = next([q[0]] for q in qs if index.count([q[0]]) <= 1_000_000)
    for label, q in (("rare", rare), ("a unigram", frequent)):
        counter = Counter(order, index, 0, cfg.train_iters, bins=10)
        res, dt = timed(counter.count, [q])
        print(f"query: training count of {label} {q[:8]} over {cfg.train_iters} steps in 10 bins: "
              f"{dt:.2f} s ({int(res.corpus[0]):,} in the corpus, {int(res.samples[0].sum()):,} samples)")
    docs, dt = timed(lambda q: list(_indexed_candidates(order, index, q))[:20], rare)
    print(f"query: documents holding it (where --text's index part): {dt * 1e3:.1f} ms ({len(docs)} docs)")
    totals, dt = timed(lambda: [index.count(q) for q in qs])
    print(f"batch: corpus counts of {len(qs):,} queries: {dt:.2f} s "
          f"({sum(totals):,} occurrences)")
    small = [q for q, c in zip(qs, totals) if c <= 100_000]
    counter = Counter(order, index, 0, cfg.train_iters, bins=10)
    res, dt = timed(counter.count, small)
    print(f"batch: training counts of the {len(small):,} queries with at most 100,000 occurrences "
          f"(10 bins): {dt:.2f} s ({int(res.corpus.sum()):,} occurrences, "
          f"{int(res.samples.sum()):,} samples); peak RSS {peak_rss_mb():,.0f} MB")
    (out / "queries.json").write_text(json.dumps(qs[:10]))


if __name__ == "__main__":
    main()
