"""n-gram index benchmark (issue #16): index build rate and size, query latency, Pile projection.

A synthetic dataset of ``--tokens`` uint16 tokens (documents of log-normal length ending with
EOD 0, token ids drawn Zipf-like over a 50k vocabulary so frequent and rare n-grams both
occur) is written as ``.bin/.idx`` with one GPT-NeoX schedule (seq 2048, batch 1024, about one
epoch). Then:

1. one shard sorted in this process: per-core rate and peak RSS of a worker's task;
2. ``pileprep index`` over the whole dataset with ``--workers`` Dask workers: wall rate and
   bytes per token;
3. queries: n-grams of 1-8 tokens taken at random positions (so they occur); the time to make
   the schedule's stream map (once), the latency of one corpus count, of one training count over
   every step (10 bins) for a rare n-gram and for the most frequent unigram (~10^8
   occurrences), of a 1,000-query batch of both, and of ``where --text`` through the index;
   with ``--old-counter REV`` the frequent-term count of ``training.ngram`` at git revision REV
   too (before the stream map: one doc_idx and shuffle_idx pass per unit of hits);
4. the projection to the Pile's 300 B tokens on one 64-core node.

    python benchmarks/ngram.py [--tokens 1000000000] [--workdir /tmp/bench-ngram] [--workers 2]
        [--keep] [--no-probe] [--old-counter REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
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
from pileprep.training.ngram import Counter
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
    ap.add_argument("--batch-cap", type=int, default=10_000_000,
                    help="leave queries with more occurrences out of the training-count batch")
    ap.add_argument("--map-docs", type=int, default=0, metavar="N",
                    help="also time making a stream map for N documents x 2 epochs (synthetic)")
    ap.add_argument("--no-probe", action="store_true", help="skip the one-shard probe")
    ap.add_argument("--old-counter", metavar="REV", help="also time training.ngram at git REV")
    args = ap.parse_args()
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
    queries(out, data, cfg, args.queries, args.old_counter, args.batch_cap)
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


def queries(out: Path, data, cfg: ScheduleConfig, n_queries: int, old_rev: str | None,
            batch_cap: int, old_cap: int = 4_000_000) -> None:
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
    made, dt = timed(lambda: (open_map(order, out), order.out_dir / "ngram" / "stream-maps")[1])
    size = sum(p.stat().st_size for p in made.iterdir())
    print(f"stream map: {dt:.2f} s for {len(order.schedule.doc_idx):,} doc_idx and "
          f"{len(order.schedule.shuffle_idx):,} shuffle_idx entries, {size:,} bytes (once per schedule)")
    rare = max(qs, key=len)
    _, dt = timed(index.count, rare)
    print(f"query: corpus count of one {len(rare)}-gram: {dt * 1e3:.1f} ms")
    unigrams = {q[0]: index.count([q[0]]) for q in qs}
    head = max(unigrams, key=unigrams.get)
    mid = max((t for t, c in unigrams.items() if c <= old_cap), key=unigrams.get)
    for label, q in (("rare", rare), ("the most frequent unigram", [head]), ("a unigram", [mid])):
        counter = Counter(order, index, 0, cfg.train_iters, bins=10)
        res, dt = timed(counter.count, [q])
        print(f"query: training count of {label} {q[:8]} over {cfg.train_iters} steps in 10 bins: "
              f"{dt:.2f} s ({int(res.corpus[0]):,} in the corpus, {int(res.samples[0].sum()):,} "
              f"samples, {int(res.occurrences[0].sum()):,} occurrences)")
    if old_rev:  # the old code takes minutes per 10^7 hits: the capped unigram, not the head
        old_count(order, index, cfg, [mid], old_rev)
    where_text(out, order, index)
    totals, dt = timed(lambda: [index.count(q) for q in qs])
    print(f"batch: corpus counts of {len(qs):,} queries: {dt:.2f} s ({sum(totals):,} occurrences)")
    # Zipf-drawn queries include head unigrams and bigrams of 10^7-10^8 occurrences each, whose
    # hits would dominate the batch: those over --batch-cap are left out and said so.
    small = [q for q, c in zip(qs, totals) if c <= batch_cap]
    counter = Counter(order, index, 0, cfg.train_iters, bins=10)
    res, dt = timed(counter.count, small)
    hits = int(res.corpus.sum())
    print(f"batch: training counts of the {len(small):,} queries with at most {batch_cap:,} "
          f"occurrences (10 bins): {dt:.2f} s ({hits:,} corpus occurrences, "
          f"{int(res.samples.sum()):,} samples, {hits / max(dt, 1e-9) / 1e6:.2f} M hits/s); "
          f"left out: {len(qs) - len(small)} queries with {sum(totals) - hits:,} occurrences; "
          f"peak RSS {peak_rss_mb():,.0f} MB")
    (out / "queries.json").write_text(json.dumps(qs[:10]))


def old_count(order, index, cfg, q: list[int], rev: str) -> None:
    """The same count with ``training/ngram.py`` as it was at git revision ``rev``."""
    source = subprocess.run(["git", "show", f"{rev}:pileprep/training/ngram.py"], check=True,
                            capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "old_ngram.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("old_ngram", path)
        old = sys.modules["old_ngram"] = importlib.util.module_from_spec(spec)  # for its dataclasses
        spec.loader.exec_module(old)
    res, dt = timed(old.Counter(order, index, 0, cfg.train_iters, bins=10).count, [q])
    print(f"query: the same count with training.ngram at {rev}: {dt:.2f} s "
          f"({int(res.samples[0].sum()):,} samples)")


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
