"""Tokenizer benchmark: the reference engine, the fast engine and the whole build, on the same
generated Pile-format text, with the same number of cores.

1. reference: ``tokenizers`` ``encode_batch_fast`` and ``encode_batch`` (the faster is kept),
   with its own thread pool on all cores, batches of 512 documents;
2. fast: pileprep's fast engine, one process per core over equal shares of the documents (the
   way the build runs it), in batches of 512 documents; also on one core, with the number of
   pre-tokens and of distinct ones (the only ones BPE runs for);
3. end to end: ``pileprep build --workers N --no-schedule`` (read, decompress, parse, tokenize,
   pack), in a subprocess;
then the ratios and the core-hours the build would take for the full Pile.

    python benchmarks/engines.py [--megabytes 200] [--workdir bench-out/engines]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).parent))
from dedup import PILE_TEXT_BYTES, texts_of  # noqa: E402
from memory import corpus, machine, measure  # noqa: E402

from pileprep.config import default_tokenizer  # noqa: E402


def reference_rate(spec: str, texts: list[str]) -> tuple[float, str]:
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    from pileprep.tokenize import load_tokenizer

    tok = load_tokenizer(spec)
    nbytes = sum(len(t.encode()) for t in texts)
    best = (0.0, "")
    for name in ("encode_batch_fast", "encode_batch"):
        fn = getattr(tok, name, None)
        if fn is None:
            continue
        fn(texts[:512])
        t = time.perf_counter()
        for i in range(0, len(texts), 512):
            fn(texts[i:i + 512])
        best = max(best, (nbytes / (time.perf_counter() - t), name))
    return best


def _fast_share(args) -> tuple[int, int]:
    spec, texts = args
    from pileprep.tokenize import fast_encoder

    enc = fast_encoder(spec)
    words, new = enc.words, enc.new_words
    for i in range(0, len(texts), 512):
        enc.encode_batch(texts[i:i + 512], 0, np.uint16)
    return enc.words - words, enc.new_words - new


def fast_rate(spec: str, texts: list[str], cores: int) -> float:
    nbytes = sum(len(t.encode()) for t in texts)
    shares = [(spec, texts[i::cores]) for i in range(cores)]
    with mp.get_context("spawn").Pool(cores, initializer=_fast_share, initargs=((spec, texts[:20]),)) as pool:
        pool.map(_fast_share, [(spec, texts[:cores])] * cores)  # tables built in every process
        t = time.perf_counter()
        pool.map(_fast_share, shares)
        return nbytes / (time.perf_counter() - t)


def fast_rate_one_core(spec: str, texts: list[str]) -> tuple[float, int, int]:
    nbytes = sum(len(t.encode()) for t in texts)
    with mp.get_context("spawn").Pool(1) as pool:
        pool.map(_fast_share, [(spec, texts[:20])])
        t = time.perf_counter()
        (words, new), = pool.map(_fast_share, [(spec, texts)])
        return nbytes / (time.perf_counter() - t), words, new


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--megabytes", type=float, default=200)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", default="bench-out/engines")
    args = ap.parse_args()
    spec = default_tokenizer()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}; "
          f"using {args.cores} cores")
    src = corpus(work, args.megabytes, 4)
    texts = texts_of(src, 1 << 62)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(texts):,} documents, {mb:.1f} MB of text")

    ref, name = reference_rate(spec, texts)
    print(f"reference ({name}, {args.cores} threads): {ref / 1e6:.2f} MB/s")
    one, words, new = fast_rate_one_core(spec, texts)
    print(f"fast engine (1 process):           {one / 1e6:.2f} MB/s; {words:,} pre-tokens, "
          f"{new:,} distinct (BPE runs for those only)")
    fast = fast_rate(spec, texts, args.cores)
    print(f"fast engine ({args.cores} processes):          {fast / 1e6:.2f} MB/s  -> {fast / ref:.2f}x reference")
    run = measure(src, work / "out", args.cores, ("--tokenizer-engine", "fast"))
    e2e = run["text_mb"] * 1e6 / run["elapsed"]
    print(f"end-to-end build ({args.cores} workers, fast engine): {run['elapsed']:.1f} s, "
          f"{e2e / 1e6:.2f} MB/s  -> {e2e / ref:.2f}x reference encoding (target >= 2.5x)")
    print(f"    stage seconds: {run['report']['timings_seconds']}")
    core_hours = PILE_TEXT_BYTES / e2e * args.cores / 3600
    print(f"full Pile (825 GiB of text) at this rate: {core_hours:,.0f} core-hours "
          f"(reference encoding alone: {PILE_TEXT_BYTES / ref * args.cores / 3600:,.0f})")


if __name__ == "__main__":
    main()
