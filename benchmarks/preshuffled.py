"""Preshuffled-data benchmark: prove a preshuffled dataset equal to its idxmaps dataset's
schedule (``compare``), and find its items' sources by content from the raw text (``align``).

Builds a dataset from generated shards with a schedule of ``--steps`` steps of 1,024 samples of
2,049 tokens (several epochs of a small corpus: the samples are what is compared), writes its
samples in training order as Pythia's preshuffled ``document.bin/.idx`` (``pileprep
sequences``), adopts that, and times ``pileprep compare`` with ``--workers N``, sampling the RSS
of every process; then adopts it afresh and times ``pileprep align`` of its items against the
raw shards. Prints the rates in MB of preshuffled tokens (and of raw text) per second and per
core, the peak RSS per process, and the projections for Pythia's 600 GB preshuffled Pile.

    python benchmarks/preshuffled.py [--steps 250] [--megabytes 256] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from memory import corpus, machine, run_sampled

PILE_PRESHUFFLED_BYTES = 600_078_336_000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--megabytes", type=float, default=256)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", default="bench-out/preshuffled")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before comparing "
                    "(root only): the rate off the disk, not from memory")
    ap.add_argument("--disk-gbps", type=float, default=2.0, help="read bandwidth of one node, "
                    "for the projection (both datasets are read once)")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    raw = corpus(work, args.megabytes, 4)
    built = work / "idxmaps"
    schedule = ["--seq-length", "2048", "--batch-size", "1024", "--train-iters", str(args.steps)]
    if not (built / "manifest.json").exists():
        t, _, _ = run_sampled(["build", "--input", str(raw), "--output", str(built), "--workers",
                               str(args.workers), *schedule, "--quiet", "--overwrite"])
        print(f"idxmaps stand-in built in {t:.1f} s")
    pre = work / "published"
    if not (pre / "document.idx").exists():
        pre.mkdir(exist_ok=True)
        t, _, _ = run_sampled(["sequences", str(built), "--steps", f"0:{args.steps}",
                               "--output", str(pre / "document")])
        print(f"preshuffled stand-in written in {t:.1f} s")
    size = (pre / "document.bin").stat().st_size
    out = work / "adopted"
    shutil.rmtree(out, ignore_errors=True)
    run_sampled(["adopt", str(pre), "--output", str(out), "-q"])
    if args.cold:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    t, peaks, _ = run_sampled(["compare", str(out), str(built), "--workers", str(args.workers),
                               "--quiet"])
    rate = size / 1e6 / t
    print(f"\ncompare {args.steps * 1024:,} items ({size / 1e9:.2f} GB) with {args.workers} "
          f"workers{' (cold cache)' if args.cold else ''}: {t:.1f} s = {rate:.1f} MB/s, "
          f"{rate / args.workers:.1f} MB/s per core")
    for pid, (label, peak) in sorted(peaks.items(), key=lambda kv: -kv[1][1]):
        if peak > 20 << 20:
            print(f"  pid {pid:>7} {label:<7} peak RSS {peak / (1 << 20):7.1f} MiB")
    for nodes, what in ((1, "one 64-core node"), (10, "10 such nodes")):
        cpu = PILE_PRESHUFFLED_BYTES / 1e6 / (rate / args.workers * 64 * nodes) / 3600
        disk = 2 * PILE_PRESHUFFLED_BYTES / 1e9 / (args.disk_gbps * nodes) / 3600
        print(f"projection, Pythia's preshuffled Pile (600 GB) on {what}: {max(cpu, disk):.2f} h "
              f"({'disk' if disk > cpu else 'CPU'}-bound: CPU {cpu:.2f} h at this per-core rate, "
              f"disk {disk:.2f} h reading both datasets at {args.disk_gbps:g} GB/s a node)")
    _align(raw, pre, work, size, args.workers)
    if os.environ.get("KEEP") != "1":
        shutil.rmtree(out, ignore_errors=True)


def _align(raw: Path, pre: Path, work: Path, size: int, workers: int) -> None:
    import json

    out = work / "unlinked"
    shutil.rmtree(out, ignore_errors=True)
    run_sampled(["adopt", str(pre), "--output", str(out), "-q"])
    t, peaks, _ = run_sampled(["align", str(out), "--input", str(raw), "--workers", str(workers),
                               "--quiet"])
    text = sum(p.stat().st_size for p in raw.glob("*.jsonl.zst"))
    summary = json.loads((out / "report.json").read_text())["alignment"]
    tokens = summary["tokens"]
    share = (tokens["exact"] + tokens["ambiguous"]) / max(sum(tokens.values()), 1)
    print(f"\nalign the items by content with {workers} workers: {t:.1f} s = {size / 1e6 / t:.1f} MB "
          f"of items/s, {size / 1e6 / t / workers:.1f} per core (raw text: {text / 1e6:.0f} MB "
          f"compressed); {100 * share:.1f} % of the items' tokens matched")
    print("  " + ", ".join(f"{k} {v:,}" for k, v in summary["pieces"].items()) + " pieces")
    for pid, (label, peak) in sorted(peaks.items(), key=lambda kv: -kv[1][1]):
        if peak > 20 << 20:
            print(f"  pid {pid:>7} {label:<7} peak RSS {peak / (1 << 20):7.1f} MiB")
    hours = PILE_PRESHUFFLED_BYTES / 1e6 / (size / 1e6 / t / workers * 64) / 3600
    print(f"projection, Pythia's preshuffled Pile on one 64-core node: {hours:.1f} h at this "
          "per-core rate (plus tokenizing the raw Pile again, as align does: docs/benchmarks.md)")
    if os.environ.get("KEEP") != "1":
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
