"""Tokenizer benchmark: the reference engine, the fast engine and the whole build, on the same
Pile-format text (generated, or a real-text corpus with ``--corpus``), with the same cores.

1. reference: ``tokenizers`` ``encode_batch_fast`` and ``encode_batch`` (the faster is kept),
   with its own thread pool on all cores, batches of 512 documents; and GPT-NeoX's way (its
   ``preprocess_data.py``): ``encode`` per document in one process per core;
2. fast: pileprep's fast engine, one process per core over equal shares of the documents (the
   way the build runs it), in batches of 512 documents; also on one core, with the number of
   pre-tokens and of distinct ones (the only ones BPE runs for);
3. end to end: ``pileprep build --workers N --no-schedule`` (read, decompress, parse, tokenize,
   pack), in a subprocess;
then the ratios and the core-hours the build would take for the full Pile. With
``--compare-reference``, the same build with the reference engine, and a byte comparison; with
``--allocator-check``, the same build with Dask's own worker environment. Also the NFC step
alone, whole documents against run by run.

    python benchmarks/engines.py [--megabytes 200] [--workdir bench-out/engines] [--compare-reference]
    python benchmarks/engines.py --corpus bench-out/realtext --shards 2   # high-diversity text
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

from pileprep.core.config import default_tokenizer


def reference_rate(spec: str, texts: list[str]) -> tuple[float, str]:
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    from pileprep.tokenizer import load_tokenizer

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


def _fast_share(args) -> tuple[float, int, int]:
    """In a fresh process: read this share of the corpus, build the engine (not timed), then
    encode the share in batches of 512; returns the encoding seconds and the memo counts."""
    spec, src, index, shares, limit = args
    from pileprep.tokenizer.fast import fast_encoder

    texts = texts_of(Path(src), limit)[index::shares]
    enc = fast_encoder(spec)
    enc.encode_batch(texts[:20])  # tables loaded, compiled code loaded
    words, new = enc.words, enc.new_words
    start = time.perf_counter()
    for i in range(0, len(texts), 512):
        enc.encode_batch(texts[i:i + 512], 0, np.uint16)
    return time.perf_counter() - start, enc.words - words, enc.new_words - new


def _neox_share(args) -> tuple[float, int, int]:
    """GPT-NeoX's preprocess_data.py way: one ``encode`` call per document in each process."""
    spec, src, index, shares, limit = args
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from pileprep.tokenizer import load_tokenizer

    texts = texts_of(Path(src), limit)[index::shares]
    tok = load_tokenizer(spec)
    start = time.perf_counter()
    for text in texts:
        tok.encode(text)
    return time.perf_counter() - start, 0, 0


def pool_rate(spec: str, src: Path, nbytes: int, cores: int, share=_fast_share,
              limit: int = 1 << 62) -> tuple[float, int, int]:
    """Bytes per second of the slowest of ``cores`` processes encoding equal shares (of the
    corpus' first ``limit`` bytes of text) at once."""
    with mp.get_context("spawn").Pool(cores) as pool:
        results = pool.map(share, [(spec, str(src), i, cores, limit) for i in range(cores)])
    return (nbytes / max(r[0] for r in results), sum(r[1] for r in results),
            sum(r[2] for r in results))


def _worker_peaks(run: dict) -> str:
    return ", ".join(f"{peak / (1 << 20):.0f}" for label, peak in run["peaks"].values()
                     if label == "worker" and peak > 50 << 20)


def nfc_rates(texts: list[str], nbytes: int) -> tuple[float, float]:
    """NFC of every document, whole (CPython) and run by run (pileprep.tokenizer.nfc), bytes/s."""
    import unicodedata

    from pileprep.tokenizer.nfc import nfc

    def whole(text: str) -> str:
        if text.isascii() or unicodedata.is_normalized("NFC", text):
            return text
        return unicodedata.normalize("NFC", text)

    rates = []
    for fn in (whole, nfc):
        start = time.perf_counter()
        for text in texts:
            fn(text)
        rates.append(nbytes / (time.perf_counter() - start))
    return rates[0], rates[1]


def subset(corpus_dir: Path, shards: int, work: Path) -> Path:
    """A folder of links to the first ``shards`` shards of ``corpus_dir`` (all when 0)."""
    files = sorted(corpus_dir.glob("*.jsonl.zst"))
    if not files:
        raise SystemExit(f"no *.jsonl.zst shards in {corpus_dir}")
    out = work / f"corpus-{corpus_dir.name}-{shards or len(files)}"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jsonl.zst"):
        old.unlink()
    for f in files[:shards or len(files)]:
        (out / f.name).symlink_to(f.resolve())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--megabytes", type=float, default=200)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", default="bench-out/engines")
    ap.add_argument("--corpus", help="an existing Pile-format corpus (e.g. the real-text one "
                    "of benchmarks/realtext.py) instead of generated text (--megabytes is then ignored)")
    ap.add_argument("--shards", type=int, default=0,
                    help="with --corpus: use only its first K shards (0: all)")
    ap.add_argument("--compare-reference", action="store_true",
                    help="also build with --tokenizer-engine reference and compare the outputs")
    ap.add_argument("--allocator-check", action="store_true",
                    help="also build with Dask's own worker environment (glibc's mmap threshold "
                    "frozen at 128 KiB), to show what pileprep's setting changes")
    args = ap.parse_args()
    spec = default_tokenizer()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}; "
          f"using {args.cores} cores")
    src = subset(Path(args.corpus), args.shards, work) if args.corpus else \
        corpus(work, args.megabytes, 4)
    texts = texts_of(src, 1 << 62)
    nbytes = sum(len(t.encode()) for t in texts)
    mb = nbytes / 1e6
    print(f"{len(texts):,} documents, {mb:.1f} MB of text")

    whole, runs = nfc_rates(texts, nbytes)
    print(f"NFC, 1 core: whole documents (CPython) {whole / 1e6:.1f} MB/s, run by run "
          f"(pileprep.tokenizer.nfc) {runs / 1e6:.1f} MB/s -> {runs / whole:.2f}x")
    ref, name = reference_rate(spec, texts)
    print(f"reference ({name}, {args.cores} threads): {ref / 1e6:.2f} MB/s")
    neox, _, _ = pool_rate(spec, src, nbytes, args.cores, _neox_share)
    print(f"GPT-NeoX style (encode per document, {args.cores} processes): {neox / 1e6:.2f} MB/s "
          f"({neox / ref:.2f}x reference)")
    one, words, new = pool_rate(spec, src, nbytes, 1)
    print(f"fast engine (1 process):           {one / 1e6:.2f} MB/s; {words:,} items (pre-tokens), "
          f"{new:,} BPE runs (new words; the memo keeps the most used)")
    fast, _, _ = pool_rate(spec, src, nbytes, args.cores)
    print(f"fast engine ({args.cores} processes):          {fast / 1e6:.2f} MB/s  -> {fast / ref:.2f}x reference")
    run = measure(src, work / "out", args.cores, ("--tokenizer-engine", "fast"))
    e2e = run["text_mb"] * 1e6 / run["elapsed"]
    print(f"end-to-end build ({args.cores} workers, fast engine): {run['elapsed']:.1f} s, "
          f"{e2e / 1e6:.2f} MB/s  -> {e2e / ref:.2f}x reference encoding (target >= 2.5x), "
          f"{e2e / neox:.2f}x GPT-NeoX style, {e2e / fast:.2f} of the fast engine alone")
    print(f"    stage seconds: {run['report']['timings_seconds']}")
    if args.allocator_check:
        plain = measure(src, work / "out-dask-env", args.cores, ("--tokenizer-engine", "fast"),
                        prelude="import pileprep.runner.dask_runner\npileprep.runner.dask_runner.WORKER_PRE_SPAWN_ENV = {}")
        print(f"same build, workers with Dask's environment only: {plain['elapsed']:.1f} s "
              f"(with MALLOC_MMAP_THRESHOLD_: {run['elapsed']:.1f} s); worker peaks "
              f"{_worker_peaks(plain)} MiB (with it: {_worker_peaks(run)} MiB)")
    if args.compare_reference:
        ref_run = measure(src, work / "out-reference", args.cores, ("--tokenizer-engine", "reference"))
        names = ("pile_text_document.bin", "pile_text_document.idx", "provenance.parquet")
        same = all((work / "out" / n).read_bytes() == (work / "out-reference" / n).read_bytes()
                   for n in names)
        print(f"reference-engine build: {ref_run['elapsed']:.1f} s; .bin/.idx/provenance "
              f"{'byte-identical' if same else 'DIFFER'} to the fast engine's")
        if not same:
            raise SystemExit("the engines' outputs differ")
    core_hours = PILE_TEXT_BYTES / e2e * args.cores / 3600
    print(f"full Pile (825 GiB of text) at this rate: {core_hours:,.0f} core-hours "
          f"(reference encoding alone: {PILE_TEXT_BYTES / ref * args.cores / 3600:,.0f})")


if __name__ == "__main__":
    main()
