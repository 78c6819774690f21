"""Provenance-by-content benchmark: match raw text to a published dataset's documents.

Builds a dataset from generated shards (standing in for a published one: same format), adopts
it, then aligns the raw shards against it with ``pileprep align --workers N``, sampling the RSS
of every process. Prints the matching throughput in MB of raw text per second and per core,
the peak RSS per process, the match counts (every document must match), and a projection for
the Pile (825 GiB of raw text, 210 M documents) on one 64-core node.

    python benchmarks/align.py [--megabytes 1024] [--workers 2] [--workdir bench-out/align]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from memory import corpus, machine, run_sampled

PILE_TEXT_MB = 825 * 1024 * 1.073741824  # 825 GiB in MB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--megabytes", type=float, default=1024)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", default="bench-out/align")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    raw = corpus(work, args.megabytes, args.shards)
    built = work / "published"
    if not (built / "manifest.json").exists():
        t, _, _ = run_sampled(["build", "--input", str(raw), "--output", str(built), "--workers",
                            str(args.workers), "--no-schedule", "--quiet", "--overwrite"])
        print(f"published stand-in built in {t:.1f} s")
    rep = json.loads((built / "report.json").read_text())
    text_mb = rep["text_bytes"] / 1e6
    out = work / "adopted"
    shutil.rmtree(out, ignore_errors=True)
    t_adopt, _, _ = run_sampled(["adopt", str(built / "pile_text_document"), "--output", str(out), "-q"])
    t_align, peaks, _ = run_sampled(["align", str(out), "--input", str(raw), "--workers",
                                  str(args.workers), "--quiet"])
    alignment = json.loads((out / "report.json").read_text())["alignment"]
    docs = alignment["documents"]
    rate = text_mb / t_align
    print(f"\nraw text {text_mb:,.1f} MB, {rep['kept']:,} documents; adopt {t_adopt:.1f} s")
    print(f"align with {args.workers} workers: {t_align:.1f} s = {rate:.2f} MB/s, "
          f"{rate / args.workers:.2f} MB/s per core")
    print(f"matched: exact {docs['exact']:,}, ambiguous {docs['ambiguous']:,}, none {docs['none']:,}")
    for pid, (label, peak) in sorted(peaks.items(), key=lambda kv: -kv[1][1]):
        if peak > 20 << 20:
            print(f"  pid {pid:>7} {label:<7} peak RSS {peak / (1 << 20):7.1f} MiB")
    hours = PILE_TEXT_MB / (rate / args.workers * 64) / 3600
    print(f"\nprojection, the Pile ({PILE_TEXT_MB / 1e6:.0f} TB of raw text) on one 64-core node: "
          f"{hours:.1f} h at this per-core rate")
    if os.environ.get("KEEP") != "1":
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
