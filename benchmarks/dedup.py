"""Dedup benchmark: signature throughput against the usual datasketch way, the cost of
``--dedup`` against a plain build, and a projection to the full Pile.

1. Signatures, one core, same documents, same run: pileprep's batched MinHash against the usual
   way (shingles built in Python, ``MinHash.update_batch`` per document, datasketch's default
   SHA-1 hash), both with the same normalization. The baseline runs on a prefix of the corpus.
2. ``pileprep build`` and ``pileprep build --dedup`` on the same ~200 MB of generated text with
   2 workers, each in a subprocess with its per-process peak RSS sampled.
3. The components step alone on a synthetic duplicate graph, for its memory per document.
4. A projection of hours for the full Pile from the measured per-stage rates.

    python benchmarks/dedup.py [--megabytes 200] [--workdir bench-out/dedup] [--signatures-only]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import zstandard

sys.path.insert(0, str(Path(__file__).parent))
from memory import corpus, machine, measure  # noqa: E402

from pileprep.dedup import kernel, minhash

PILE_TEXT_BYTES = 825 * (1 << 30)  # the Pile's text, as published (825 GiB)
PILE_DOCS = 210_607_728  # documents in the Pile's training split (Pythia's figure)


def texts_of(shards: Path, limit_bytes: int) -> list[str]:
    out, size = [], 0
    for path in sorted(shards.glob("*.jsonl.zst")):
        with open(path, "rb") as f:
            for line in zstandard.ZstdDecompressor().stream_reader(f).read().splitlines():
                text = orjson.loads(line)["text"]
                out.append(text)
                size += len(text.encode())
                if size >= limit_bytes:
                    return out
    return out


def usual_datasketch(texts: list[str], num_perm: int = 128) -> None:
    from datasketch import MinHash

    for text in texts:
        words = minhash.normalize(text).split(" ")
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch([" ".join(words[i:i + 5]).encode() for i in range(max(len(words) - 4, 1))])


def _best_rate(fn, texts: list[str], repeats: int) -> float:
    """Bytes per second of ``fn(texts)``: the best of ``repeats`` runs after a warm-up run, as a
    worker that has already processed a partition runs."""
    nbytes = sum(len(t.encode()) for t in texts)
    fn(texts)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(texts)
        best = min(best, time.perf_counter() - t)
    return nbytes / best


def pileprep_signatures(texts: list[str]) -> None:
    for i in range(0, len(texts), stages_batch()):
        minhash.signatures(texts[i:i + stages_batch()])


def stages_batch() -> int:
    from pileprep.dedup.steps import _BATCH_DOCS

    return _BATCH_DOCS


def signature_parts(texts: list[str]) -> dict:
    """Where a signature's time goes: Python's NFC + encode, then the compiled kernel (which
    lower-cases by table)."""
    import unicodedata

    import numpy as np

    lower = _best_rate(lambda ts: [minhash._nfc_bytes(t) for t in ts], texts, 2)
    pieces = [minhash._nfc_bytes(t) for t in texts]
    lengths = np.fromiter(map(len, pieces), np.int64, len(pieces))
    ends = np.cumsum(lengths)
    raw = np.frombuffer(b"".join(pieces), np.uint8)
    a, b = minhash.permutations(128, 1)
    table = minhash.lower_table()

    def run_kernel(_):
        out = np.full((len(texts), 128), 0xFFFFFFFF, np.uint32)
        kernel.minhash_batch(raw, ends - lengths, ends, 5, a, b, out, np.zeros(len(texts), bool),
                             table, np.zeros(len(texts), bool))

    nbytes = sum(len(t.encode()) for t in texts)
    non_nfc = sum(len(t.encode()) for t in texts
                  if not t.isascii() and not unicodedata.is_normalized("NFC", t))
    return {"lower": lower, "kernel": _best_rate(run_kernel, texts, 2), "non_nfc": non_nfc / nbytes}


def signature_rates(texts: list[str], baseline_docs: int) -> tuple[float, float]:
    fast = _best_rate(pileprep_signatures, texts, 3)
    base = _best_rate(usual_datasketch, texts[:baseline_docs], 2)
    return fast, base


def components_memory(docs: int) -> dict:
    """Peak RSS of the components step on a graph like the Pile's: a third of documents removed."""
    code = f"""
import numpy as np, resource, sys, tempfile, time, os
from pileprep.dedup import steps
rng = np.random.default_rng(0)
n = {docs}
dups = rng.choice(n, n // 3, replace=False)
kept = rng.integers(0, n, len(dups))
e = np.zeros(len(dups), steps.EDGE_ROW)
e["a"], e["b"], e["sim"] = np.minimum(dups, kept), np.maximum(dups, kept), 0.95
e = e[e["a"] != e["b"]]
d = tempfile.mkdtemp()
np.save(d + "/e.npy", e); del e, dups, kept
import psutil
before = psutil.Process().memory_info().rss
t = time.perf_counter()
steps.components([d + "/e.npy"], d + "/r.npy")
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, peak, before = out.stdout.split()
    # The step's own memory: the process peak minus what the interpreter held before it.
    return {"docs": docs, "seconds": float(seconds),
            "peak_mib": (int(peak) - int(before)) / (1 << 20)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--megabytes", type=float, default=200)
    ap.add_argument("--signature-megabytes", type=float, default=40)
    ap.add_argument("--baseline-docs", type=int, default=1500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--graph-docs", type=int, default=10_000_000)
    ap.add_argument("--workdir", default="bench-out/dedup")
    ap.add_argument("--signatures-only", action="store_true", help="only part [1]")
    ap.add_argument("--text", help="part [1] on these shards (benchmarks/realtext.py's) instead "
                    "of the generated corpus")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    src = None if args.text and args.signatures_only else corpus(work, args.megabytes, 4)

    texts = texts_of(Path(args.text) if args.text else src, int(args.signature_megabytes * 1e6))
    fast, base = signature_rates(texts, args.baseline_docs)
    print(f"\n[1] signatures, 1 core, 128 permutations: pileprep {fast / 1e6:.2f} MB/s, usual "
          f"datasketch way {base / 1e6:.2f} MB/s -> ratio {fast / base:.2f}x (target >= 4)")
    parts = signature_parts(texts)
    print(f"    of which: NFC + encode (Python) {parts['lower'] / 1e6:.1f} MB/s, compiled kernel "
          f"(lower case by table) {parts['kernel'] / 1e6:.1f} MB/s; {100 * parts['non_nfc']:.0f} % "
          "of the text is in documents that are not NFC")
    if args.signatures_only:
        return

    # Fresh output directories: a kept signature store would let --dedup skip its main cost.
    for name in ("plain", "dedup"):
        shutil.rmtree(work / name, ignore_errors=True)
    plain = measure(src, work / "plain", args.workers)
    dedup = measure(src, work / "dedup", args.workers, ("--dedup",))
    mb = plain["text_mb"]
    ratio = dedup["elapsed"] / plain["elapsed"]
    peak = lambda r: max(p for _, p in r["peaks"].values()) / (1 << 20)  # noqa: E731
    d = dedup["report"]["dedup"]
    print(f"\n[2] {mb:.1f} MB of text, {args.workers} workers")
    print(f"    plain build  {plain['elapsed']:7.1f} s   largest process peak {peak(plain):6.0f} MiB")
    print(f"    --dedup      {dedup['elapsed']:7.1f} s   largest process peak {peak(dedup):6.0f} MiB"
          f"   -> ratio {ratio:.2f}x (target <= 1.5)")
    print(f"    stage seconds (dedup build): {dedup['report']['timings_seconds']}")
    print(f"    removed {d['removed']:,} of {dedup['report']['lines_read']:,} documents, "
          f"{d['candidate_pairs']:,} candidate pairs, {d['verified_pairs']:,} verified")

    comp = components_memory(args.graph_docs)
    per_100m = comp["peak_mib"] * 100e6 / comp["docs"] / 1024
    print(f"\n[3] components on {comp['docs']:,} documents (a third duplicated, one edge each): "
          f"{comp['seconds']:.1f} s, {comp['peak_mib']:.0f} MiB above the interpreter -> about "
          f"{per_100m:.1f} GiB per 100 M documents")

    # Projection: the parallel stages scale with cores; components runs once.
    t = dedup["report"]["timings_seconds"]
    core_s_per_byte = {k: t[k] * args.workers / (dedup["report"]["text_bytes"] + 1)
                       for k in ("ingest_and_tokenize", "dedup")}
    print("\n[4] projection for the full Pile (825 GiB of text, 210.6 M documents), from the "
          "per-core rates above")
    comp_hours = comp["seconds"] * PILE_DOCS / comp["docs"] / 3600
    for label, cores in (("one 64-core node", 64), ("10 nodes x 64 cores", 640)):
        hours = {k: v * PILE_TEXT_BYTES / cores / 3600 for k, v in core_s_per_byte.items()}
        total = sum(hours.values()) + comp_hours
        print(f"    {label:<20}: ingest+tokenize {hours['ingest_and_tokenize']:.1f} h, "
              f"dedup {hours['dedup']:.1f} h, components {comp_hours:.2f} h -> {total:.1f} h; "
              f"memory per worker ~{peak(dedup):.0f} MiB, components "
              f"{per_100m * PILE_DOCS / 100e6:.1f} GiB once")


if __name__ == "__main__":
    main()
