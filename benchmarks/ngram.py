"""n-gram index benchmark (issues #16, #24): index build, corpus-count latency at 1 B tokens and
on a Pile-shaped index, training counts by both strategies, contamination, Pile projections.

A synthetic dataset of ``--tokens`` uint16 tokens (documents of log-normal length ending with
EOD 0, token ids drawn Zipf-like over a 50k vocabulary so frequent and rare n-grams both
occur) is written as ``.bin/.idx`` with one GPT-NeoX schedule (seq 2048, batch 1024, about one
epoch). Then:

1. one shard sorted in this process: per-core rate and peak RSS of a worker's task;
2. ``pileprep index`` over the whole dataset with ``--workers`` Dask workers: wall rate and
   bytes per token;
3. corpus counts: n-grams of 1-8 tokens taken at random positions (so they occur), one at a
   time (warm latency) and as one batch of 1,000;
4. a **Pile-shaped** index (``--pile``): 300 B tokens in 2,235 shards of 2^27, as sparse files
   (suffixes and tokens read as zeros) with sorted random keys, so each query narrows to its own
   stride of rows in every shard and faults in its own pages, as on real data; latency of one
   count and of a 1,000-query batch, and the process's peak RSS (file-backed: see
   ``formats.suffix.map_budget``), each twice: first touches, then with the pages cached.
   The suffixes point at token 0 of their shard, so a probe's token read lands on one page
   per shard, where real data's land anywhere: rows gathered per count are printed to scale;
5. training counts over every step (10 bins): a rare n-gram by its index hits, the most
   frequent unigram and the 1,000-query batch by the streaming pass and by ``auto`` (Dask
   workers), in occurrences per second per core;
6. contamination of 1,000 examples of ~100 tokens (half cut from documents) by 13-grams;
7. the projection to the Pile's 300 B tokens on one 64-core node and a 10-node cluster.

    python benchmarks/ngram.py [--tokens 1000000000] [--workdir /tmp/bench-ngram] [--workers 2]
        [--keep] [--no-probe] [--pile DIR] [--map-docs N]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from memory import machine

from pileprep.jobs.index import build_index, index_shard
from pileprep.core import atomic
from pileprep.core.config import ClusterConfig, ScheduleConfig
from pileprep.core.files import MANIFEST, PROVENANCE, data_path, dataset_prefix, index_path
from pileprep.formats import indexed, suffix
from pileprep.training import schedule_files
from pileprep.training.lookups import _indexed_candidates, occurrences
from pileprep.jobs.count import count_terms
from pileprep.training.order import TrainingOrder
from pileprep.training.streammap import open_map

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


def write_provenance(out: Path, sizes: np.ndarray) -> None:
    """A provenance table (one made-up source line per document), which ``where`` reads."""
    from pileprep.formats import provenance

    part = out / "provenance-part.parquet"
    import pyarrow.parquet as pq
    pq.write_table(provenance.part_table("synthetic.jsonl", np.arange(len(sizes)), ["Synthetic"] * len(sizes),
                                         sizes, sizes.astype(np.int64) * 4), part)
    provenance.merge([part], out / PROVENANCE)
    part.unlink()


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
    ap.add_argument("--map-docs", type=int, default=0, metavar="N",
                    help="also time making a stream map for N documents x 2 epochs (synthetic)")
    ap.add_argument("--no-probe", action="store_true", help="skip the one-shard probe")
    ap.add_argument("--pile", metavar="DIR", help="also build (sparse, once) and query a "
                    "Pile-shaped index in DIR")
    ap.add_argument("--only-pile", action="store_true", help="only the Pile-shaped index")
    ap.add_argument("--dataset", metavar="OUT_DIR", help="instead of the synthetic dataset, a "
                    "`pileprep build` with a schedule (real text: benchmarks/realtext.py shards): "
                    "indexed once, then the same queries")
    ap.add_argument("--pile-shard-tokens", type=int, default=1 << 27,
                    help="its shards' size (2^27: 2,235 shards; 2^30-1: 280)")
    args = ap.parse_args()
    if args.pile:
        print(f"machine: {machine()}")
        pile_shaped(Path(args.pile), args.pile_shard_tokens)
        if args.only_pile:
            return
    if args.dataset:
        print(f"machine: {machine()}")
        built(Path(args.dataset), args.workers, args.queries)
        return
    out = Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    prefix = dataset_prefix(out, NAME)
    if not index_path(prefix).exists():
        _, dt = timed(write_dataset, out, args.tokens)
        print(f"dataset: {args.tokens:,} tokens written in {dt:.1f} s")
    data = indexed.IndexedDataset(prefix)
    if not (out / PROVENANCE).exists():
        write_provenance(out, np.asarray(data.sizes))
    cfg = ScheduleConfig(seq_length=2048, batch_size=1024, seed=1234,
                         train_iters=max(1, int(0.98 * len(data.tokens)) // (2048 * 1024)))
    if schedule_files.find(prefix, cfg) is None:
        schedule_files.build_for_dataset(out, prefix, cfg, quiet=True)
    print(f"dataset: {len(data):,} documents, {len(data.tokens):,} tokens; schedule "
          f"{cfg.train_iters} steps x {cfg.batch_size} x {cfg.seq_length + 1}")

    if not args.no_probe:
        one_shard(prefix, data, args.shard_tokens, out)
    meta = build_index(out, ClusterConfig(workers=args.workers), args.shard_tokens, quiet=True)
    wall = meta["wall_seconds"]
    per_core = meta["tokens"] / max(meta["task_seconds"], 1e-9)
    print(f"index: {meta['tokens']:,} tokens, {len(meta['shards'])} shards, {meta['bytes']:,} bytes "
          f"({meta['bytes'] / meta['tokens']:.2f} bytes/token) in {wall:.1f} s wall with "
          f"{args.workers} workers ({meta['tokens'] / max(wall, 1e-9) / 1e6:.2f} M tokens/s; "
          f"{per_core / 1e6:.2f} M tokens/s per busy core)" if not meta["reused"] else "index: reused")
    queries(out, data, cfg, args.queries, args.workers)
    if args.map_docs:
        map_rate(out, args.map_docs)
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
    target, keys = out / "probe.sa", out / "probe-keys.npy"
    with open(target, "wb") as f:
        f.truncate(t1 * suffix.SA_DTYPE.itemsize)
    child = multiprocessing.get_context("spawn").Process(
        target=index_shard, args=(str(prefix), 0, d0, d1, t0, t1, str(target), str(keys)))
    t_start = time.perf_counter()
    child.start()
    child.join()
    dt = time.perf_counter() - t_start
    target.unlink()
    keys.unlink()
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"one shard in a fresh process: {t1 - t0:,} tokens in {dt:.1f} s "
          f"({(t1 - t0) / dt / 1e6:.2f} M tokens/s, process start included); peak RSS {rss:,.0f} MB")


def built(out: Path, workers: int, n_queries: int) -> None:
    """The index and the queries of :func:`queries` on an existing build (its own schedule)."""
    from pileprep.training.order import dataset_name

    order = TrainingOrder(out)
    meta = build_index(out, ClusterConfig(workers=workers), quiet=True)
    if not meta["reused"]:
        print(f"index: {meta['tokens']:,} tokens in {meta['wall_seconds']:.1f} s wall")
    print(f"dataset: {out}: {len(order.data):,} documents, {meta['tokens']:,} tokens; schedule "
          f"{order.cfg.train_iters} steps x {order.cfg.batch_size} x {order.cfg.seq_length + 1}")
    data = indexed.IndexedDataset(dataset_prefix(out, dataset_name(out)))
    queries(out, data, order.cfg, n_queries, workers)


def draw_queries(tokens, n: int, rng) -> list[list[int]]:
    """n-grams of 1-8 tokens at random positions, none holding EOD (so they occur)."""
    qs = []
    while len(qs) < n:
        m = int(rng.integers(1, 9))
        p = int(rng.integers(0, len(tokens) - m))
        q = np.asarray(tokens[p:p + m]).tolist()
        if 0 not in q:
            qs.append(q)
    return qs


def latency(index, qs: list[list[int]], label: str):
    """Counts one at a time (the first 200) and as one batch, twice: first touches, then again
    with the pages in the page cache; with the rows each count gathers and the peak RSS."""
    totals = None
    for attempt in ("first", "again"):
        times = []
        g0 = index.gathered_total
        for q in qs[:200]:
            _, dt = timed(index.count, q)
            times.append(dt)
        rows = (index.gathered_total - g0) / min(200, len(qs))
        totals, dt = timed(index.counts, qs)
        print(f"{label} ({attempt}): one count {np.median(times) * 1e3:.1f} ms median, "
              f"{np.percentile(times, 90) * 1e3:.1f} ms p90, {rows:,.0f} rows gathered (target <= 50 ms); "
              f"{len(qs):,} in one batch {dt:.2f} s (target <= 10 s); peak RSS {peak_rss_mb():,.0f} MB")
    return totals


def queries(out: Path, data, cfg: ScheduleConfig, n_queries: int, workers: int) -> None:
    rng = np.random.default_rng(1)
    order = TrainingOrder(out, cfg, data=data)
    index = suffix.SuffixIndex(out, data)
    qs = draw_queries(data.tokens, n_queries, rng)
    made, dt = timed(lambda: (open_map(order, out), order.out_dir / "ngram" / "stream-maps")[1])
    size = sum(p.stat().st_size for p in made.iterdir())
    print(f"stream map: {dt:.2f} s for {len(order.schedule.doc_idx):,} doc_idx and "
          f"{len(order.schedule.shuffle_idx):,} shuffle_idx entries, {size:,} bytes (once per schedule)")
    totals = latency(index, qs, f"corpus counts, {len(index.shards)} shards")
    cluster = ClusterConfig(workers=workers)
    T = cfg.train_iters
    rare = max(qs, key=len)
    res, dt = timed(count_terms, order, [rare], 0, T, 10, "index")
    print(f"training count of a rare {len(rare)}-gram by its index hits, {T} steps in 10 bins: "
          f"{dt:.3f} s ({int(res.occurrences.sum()):,} occurrences)")
    head = [max({q[0] for q in qs if len(q) == 1}, key=lambda t: index.count([t]))]
    trained = T * cfg.batch_size * (cfg.seq_length + 1)
    for label, batch in (("the most frequent unigram", [head]), (f"{len(qs):,} queries", qs)):
        res, dt = timed(count_terms, order, batch, 0, T, 10, "stream", cluster)
        occ, cpu = int(res.occurrences.sum()), res.pass_cpu_seconds
        print(f"training counts of {label} by the streaming pass: {dt:.1f} s wall with {workers} "
              f"workers (cluster start included), {occ:,} occurrences; tasks' CPU {cpu:.1f} s: "
              f"{occ / cpu / 1e6:.0f} M occurrences/s per core (target >= 50), "
              f"{trained / cpu / 1e6:.0f} M trained tokens/s per core")
    res, dt = timed(count_terms, order, qs, 0, T, 10, "auto", cluster)
    by_pass = sum(s == "stream" for s in res.strategy)
    print(f"training counts of {len(qs):,} queries, auto: {dt:.1f} s ({by_pass} by the pass, "
          f"{len(qs) - by_pass} by their hits; {int(res.occurrences.sum()):,} occurrences); "
          f"peak RSS {peak_rss_mb():,.0f} MB")
    contamination_bench(order, index, data, T, rng)
    where_text(out, order, index)
    (out / "queries.json").write_text(json.dumps(qs[:10]))


def contamination_bench(order, index, data, T: int, rng, n: int = 1000) -> None:
    """1,000 examples of ~100 tokens: half cut from documents, half drawn at random."""
    from pileprep.training.contamination import contamination

    examples = []
    for i in range(n):
        if i % 2:
            examples.append(rng.integers(1, 50_000, 100).tolist())
            continue
        d = int(rng.integers(len(data)))
        examples.append(np.asarray(data[d][:100]).tolist())
    res, dt = timed(contamination, order, index, examples, 13, 0, T)
    grams = int(res.ngrams.sum())
    print(f"contamination of {n:,} examples ({grams:,} 13-grams): {dt:.1f} s "
          f"({grams / dt:,.0f} n-grams/s, one process); {int((res.in_corpus > 0).sum())} with an "
          f"n-gram in the corpus, {int((res.verbatim_corpus > 0).sum())} whole")


def pile_shaped(folder: Path, shard_tokens: int = 1 << 27, n_queries: int = 1000) -> None:
    """A sparse index of the Pile's shape (see the module's docstring) and its lookups."""
    from pileprep.jobs.index import _join_keys  # noqa: F401 - the format is the job's

    folder.mkdir(parents=True, exist_ok=True)
    prefix = dataset_prefix(folder, NAME)
    shards = -(-PILE_TOKENS // shard_tokens)
    tokens = shards * shard_tokens
    docs = 210_000_000
    ngram = folder / "ngram"
    if not (ngram / "index.json").exists():
        t0 = time.perf_counter()
        with open(data_path(prefix), "wb") as f:
            f.truncate(tokens * 2)
        with open(index_path(prefix), "wb") as f:  # a real header, then sparse zeros
            indexed.write_index(f, np.uint16, 0, lambda: [])
        _sparse_index_header(index_path(prefix), docs)
        ngram.mkdir(exist_ok=True)
        with open(ngram / "suffixes.sa", "wb") as f:
            f.truncate(tokens * 4)
        per = -(-shard_tokens // suffix.KEY_STRIDE)
        keys = np.lib.format.open_memmap(ngram / "keys.npy", "w+", np.uint64, (shards * per,))
        rng = np.random.default_rng(0)
        for k in range(shards):  # sorted random keys behind each shard's number: every query
            # narrows to its own stride of rows in each shard, as on real data
            head = np.sort(rng.integers(0, 1 << suffix.KEY_BITS, per, dtype=np.uint64))
            keys[k * per:(k + 1) * per] = (np.uint64(k) << np.uint64(suffix.KEY_BITS)) | head
        keys.flush()
        del keys
        atomic.write_json(out_manifest := folder / MANIFEST, {"settings": {"pack": {"name": NAME}}})
        meta = {"format": suffix.FORMAT, "version": suffix.VERSION, "dtype": "uint16",
                "documents": docs, "tokens": tokens, "shard_tokens": shard_tokens,
                "key_stride": suffix.KEY_STRIDE, "last_token": 0,
                "data": suffix.data_identity(prefix), "bytes": tokens * 4,
                "shards": [suffix.Shard(0, 0, k * shard_tokens, (k + 1) * shard_tokens).to_json()
                           for k in range(shards)]}
        atomic.write_json(ngram / "index.json", meta)
        print(f"Pile-shaped index: {tokens:,} tokens in {shards:,} shards written sparse in "
              f"{time.perf_counter() - t0:.1f} s ({out_manifest.name} and index.json real)")
    data = indexed.IndexedDataset(prefix)
    index = suffix.SuffixIndex(folder, data)
    rng = np.random.default_rng(2)
    qs = [rng.integers(1, 50_000, int(rng.integers(1, 9))).tolist() for _ in range(n_queries)]
    latency(index, qs, f"Pile-shaped, {shards:,} shards of {shard_tokens:,} tokens")


def _sparse_index_header(path: Path, docs: int) -> None:
    """Rewrite an empty ``.idx`` as one of ``docs`` documents whose arrays are sparse zeros."""
    import struct

    raw = bytearray(path.read_bytes())
    # MMIDIDX header: magic (9), version (8), dtype code (1), then the counts (8 + 8)
    struct.pack_into("<QQ", raw, 18, docs, docs + 1)
    with open(path, "wb") as f:
        f.write(raw[:34])
        f.truncate(34 + docs * 4 + docs * 8 + (docs + 1) * 8)


def map_rate(out: Path, n_docs: int, epochs: int = 2) -> None:
    """The stream map's build rate on a schedule of Pile-like length: a shuffled doc_idx of
    ``n_docs`` x ``epochs`` entries and a shuffle of a third as many samples, from disk."""
    from pileprep.training import streammap

    rng = np.random.default_rng(0)
    work = out / "map-rate"
    work.mkdir(exist_ok=True)
    doc_idx = np.tile(np.arange(n_docs, dtype=np.int32), epochs)
    rng.shuffle(doc_idx)
    np.save(work / "doc.npy", doc_idx)
    np.save(work / "sizes.npy", rng.integers(2, 3000, n_docs).astype(np.int32))
    shuffle = np.arange(len(doc_idx) // 3, dtype=np.int64)
    rng.shuffle(shuffle)
    np.save(work / "shuffle.npy", shuffle)
    del doc_idx, shuffle
    doc_idx, sizes, shuffle = (np.load(work / f, mmap_mode="r") for f in ("doc.npy", "sizes.npy", "shuffle.npy"))
    _, a = timed(streammap.build_copies, doc_idx, sizes, epochs, work / "copies.npy")
    _, b = timed(streammap.build_trained, shuffle, work / "trained.npy")
    print(f"stream map rate: {len(doc_idx):,} doc_idx entries in {a:.1f} s ({len(doc_idx) / a / 1e6:.2f} M/s), "
          f"{len(shuffle):,} shuffle entries in {b:.1f} s ({len(shuffle) / b / 1e6:.1f} M/s)")
    shutil.rmtree(work)


def where_text(out: Path, order, index) -> None:
    """``where --text``'s work for 12 tokens of a document: candidates from the index, each
    decoded (as the command confirms the text), then each document's training rows. Synthetic
    ids do not survive decode + encode, so the ids are searched as they are; the command itself
    is timed too (its text re-encodes to other ids: it finds no document, a lower bound)."""
    from pileprep.tokenizer import load_tokenizer
    from pileprep.core.config import default_tokenizer

    tok = load_tokenizer(default_tokenizer())
    doc = len(order.data) // 3
    core = np.asarray(order.data[doc][20:32]).tolist()
    t0 = time.perf_counter()
    docs = list(_indexed_candidates(order, index, core))[:20]
    texts = [tok.decode(order.data[d].tolist(), skip_special_tokens=False) for d in docs]
    t1 = time.perf_counter()
    rows = [len(occurrences(order, d)) for d in docs]
    t2 = time.perf_counter()
    print(f"where --text (12 tokens of doc {doc}): {(t1 - t0) * 1e3:.0f} ms for {len(docs)} "
          f"document(s) found and decoded ({sum(map(len, texts)):,} chars), {(t2 - t1) * 1e3:.0f} ms "
          f"for their {sum(rows)} training rows: {t2 - t0:.2f} s")
    text = tok.decode(core)
    cmd = [sys.executable, "-m", "pileprep.cli", "where", str(out), "--text", text, "--limit", "20"]
    done, dt = timed(lambda: subprocess.run(cmd, capture_output=True, text=True, env=os.environ))
    print(f"`pileprep where --text` as a command: {dt:.2f} s wall, exit {done.returncode} "
          f"(interpreter and imports included)")


if __name__ == "__main__":
    main()
