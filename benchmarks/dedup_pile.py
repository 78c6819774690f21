"""The serial parts of ``build --dedup`` at the Pile's size: measured on synthetic data here at
a fraction of it, and projected (linearly, with the measured figures printed so the projection
can be checked).

What still runs in one process once the duplicates are known:

1. ``components``: one task loads every verified edge and labels the connected components
   (``dedup.steps.components``). Measured on synthetic graphs shaped like the Pile's (a third of
   documents removed, one edge each) at two sizes, in a subprocess each, for time and peak RSS
   above the interpreter; projected to 210.6 M documents.
2. The driver's hash of the deduplicated ``.bin``: the parts are written in parallel, but
   ``manifest.json`` holds the sha256 of the whole file, which is one sequential pass (it
   follows the writers, reading back from the page cache). Measured: hashlib's sha256 rate.
3. ``duplicates.parquet``: the driver looks up the source line and subset of every removed
   document and of its kept one in the signature files (``dedup.apply.write_table``).
   Measured on synthetic signature files of 8,400 documents each (the Pile's 210.6 M documents
   in ~25,000 partitions of 32 MiB), a third removed; time and peak RSS per removed document.

Plus the scratch the LSH shuffle files take, from the per-document figures of a real build's
``report.json`` (``--report``): candidate pairs and verified edges per document.

    python benchmarks/dedup_pile.py [--graph-docs 10000000 --graph-docs 40000000]
        [--table-docs 8400000] [--report bench-out/.../report.json] [--workdir bench-out/dedup-pile]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from dedup import PILE_DOCS, components_memory  # noqa: E402
from memory import machine  # noqa: E402

GIB = 1 << 30
PILE_TOKENS = 300e9  # tokens of the Pile as Pythia tokenized it (one epoch)
PILE_DEDUP_TOKENS = 207e9  # of the deduplicated Pile
PART_DOCS = 8_400  # documents per 32 MiB partition of the Pile (~25,000 partitions)
NODE_CORES, NODES = 64, 10


def sha256_rate(nbytes: int = 1 << 30) -> float:
    data = memoryview(bytes(nbytes))
    h = hashlib.sha256()
    t = time.perf_counter()
    for i in range(0, nbytes, 8 << 20):
        h.update(data[i:i + (8 << 20)])
    return nbytes / (time.perf_counter() - t)


def table_cost(docs: int, workdir: Path) -> dict:
    """``write_table`` for a third of ``docs`` removed, over synthetic signature files of
    ``PART_DOCS`` each (only the columns it reads), in a subprocess: seconds and peak RSS."""
    code = f"""
import numpy as np, pyarrow as pa, pyarrow.parquet as pq, resource, time, psutil
from pathlib import Path
from pileprep.dedup import apply, steps
from pileprep.formats.parts import Partition
work = Path({str(workdir)!r}); work.mkdir(parents=True, exist_ok=True)
n, per = {docs}, {PART_DOCS}
parts, paths, offsets = [], [], []
names = np.array(["Pile-CC", "GitHub", "ArXiv", "FreeLaw", "PubMed Central", "Books3"])
rng = np.random.default_rng(0)
for k, start in enumerate(range(0, n, per)):
    rows = min(per, n - start)
    path = work / f"sig-{{k:05d}}.parquet"
    if not path.exists():
        pq.write_table(pa.table({{"line": np.arange(start, start + rows, dtype=np.int64),
                                  "pile_set_name": names[rng.integers(0, len(names), rows)]}}), path)
    paths.append(path); offsets.append(start)
    parts.append(Partition(path=str(path), source=f"{{k // 300:02d}}.jsonl.zst",
                           shard_index=k // 300, index=k % 300, first_line=start, rows=rows,
                           text_bytes=0))
offsets = np.array(offsets, np.int64)
dups = np.sort(rng.choice(n, n // 3, replace=False))
removed = np.zeros(len(dups), steps.REMOVED_ROW)
removed["gid"] = dups
removed["kept"] = np.maximum(dups - rng.integers(1, 1000, len(dups)), 0)
removed["sim"], removed["direct"] = 0.95, True
before = psutil.Process().memory_info().rss
t = time.perf_counter()
apply.write_table(removed, offsets, parts, paths, work / "duplicates.parquet")
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, before, len(dups))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, peak, before, removed = out.stdout.split()
    return {"docs": docs, "removed": int(removed), "seconds": float(seconds),
            "peak_mib": (int(peak) - int(before)) / (1 << 20)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph-docs", type=int, action="append",
                    help="documents of a synthetic graph (repeatable; default 10 M and 40 M)")
    ap.add_argument("--table-docs", type=int, default=8_400_000)
    ap.add_argument("--report", help="report.json of a real --dedup build: shuffle sizes per document")
    ap.add_argument("--workdir", default="bench-out/dedup-pile")
    args = ap.parse_args()
    work = Path(args.workdir)
    print(f"machine: {machine()}")
    scale = PILE_DOCS

    print("\n[1] components, one task (a third of documents removed, one edge each)")
    fits = []
    for docs in args.graph_docs or [10_000_000, 40_000_000]:
        c = components_memory(docs)
        fits.append(c)
        print(f"    {docs / 1e6:6.1f} M documents: {c['seconds']:6.1f} s, {c['peak_mib']:7,.0f} MiB "
              f"above the interpreter")
    big = fits[-1]
    comp_s = big["seconds"] * scale / big["docs"]
    comp_gib = big["peak_mib"] * scale / big["docs"] / 1024
    print(f"    -> the Pile ({scale / 1e6:.1f} M documents), from the largest run: ~{comp_s / 60:.1f} min, "
          f"~{comp_gib:.1f} GiB in one worker")

    print("\n[2] sha256 of the deduplicated .bin, one process (follows the parallel writers)")
    rate = sha256_rate()
    kept = PILE_DEDUP_TOKENS * 2
    print(f"    hashlib sha256: {rate / 1e9:.2f} GB/s -> {kept / 1e9:.0f} GB (207 B uint16 tokens): "
          f"~{kept / rate / 60:.1f} min, a few MiB of memory")

    print(f"\n[3] duplicates.parquet (driver), {args.table_docs / 1e6:.1f} M documents, a third removed")
    t = table_cost(args.table_docs, work / "sigs")
    per_doc_s = t["seconds"] / t["removed"]
    per_doc_b = t["peak_mib"] * (1 << 20) / t["removed"]
    pile_removed = scale / 3
    print(f"    {t['removed']:,} removed: {t['seconds']:.1f} s, {t['peak_mib']:,.0f} MiB above the "
          f"interpreter -> the Pile ({pile_removed / 1e6:.0f} M removed): ~{per_doc_s * pile_removed / 60:.1f} "
          f"min, ~{per_doc_b * pile_removed / GIB:.1f} GiB in the driver")

    print("\n[4] scratch of the LSH shuffle at the Pile's size (each step's files deleted once read)")
    bands, num_perm = 11, 128
    cand, verified = 1.0, 1 / 3  # per document, unless a real build's report says otherwise
    if args.report:
        import json

        rep = json.loads(Path(args.report).read_text())
        docs = rep["lines_read"]
        cand = rep["dedup"]["candidate_pairs"] / docs
        verified = rep["dedup"]["verified_pairs"] / docs
        print(f"    per document, from {args.report}: {cand:.2f} candidate pairs, "
              f"{verified:.2f} verified edges")
    else:
        print(f"    assumed per document: {cand:.2f} candidate pairs, {verified:.2f} verified edges")
    rows = {"band rows (16 B x bands)": 16 * bands, "candidate pairs (16 B)": 16 * cand,
            f"attach rows (16 B + {num_perm} x 4 B signature)": (16 + 4 * num_perm) * cand,
            "edges (20 B)": 20 * verified, "signatures, kept (~4 B x num_perm + line, subset)":
            4 * num_perm + 16}
    for name, per_doc in rows.items():
        print(f"    {name:<50s} {per_doc:7.1f} B/doc -> {per_doc * scale / 1e9:6.1f} GB")

    print(f"\n[5] summary for the Pile: one {NODE_CORES}-core node or {NODES} such nodes "
          "(the serial parts do not depend on the cores)")
    print(f"    components        ~{comp_s / 60:.1f} min, ~{comp_gib:.1f} GiB in one worker: "
          "the largest worker's memory")
    print(f"    .bin sha256       ~{kept / rate / 60:.1f} min in the driver, overlapped with the "
          "parallel range writes")
    print(f"    duplicates table  ~{per_doc_s * pile_removed / 60:.1f} min, "
          f"~{per_doc_b * pile_removed / GIB:.1f} GiB in the driver")


if __name__ == "__main__":
    main()
