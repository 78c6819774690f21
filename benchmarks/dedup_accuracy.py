"""Dedup accuracy on pairs of known similarity: the figures tests/test_dedup.py asserts bounds on.

Builds the test suite's pair corpus (520 pairs with true Jaccard >= 0.92, 520 with <= 0.75, 80
exact copies, across 4 shards; true Jaccard from Python sets), runs `pileprep dedup` at the
default settings and prints how many pairs of each kind were joined.

    python benchmarks/dedup_accuracy.py [--workdir bench-out/dedup-accuracy]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from dedup_ref import pair_corpus  # noqa: E402

from pileprep.core.config import BuildConfig, with_settings
from pileprep.jobs.dedup_only import dedup_only


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="bench-out/dedup-accuracy")
    args = ap.parse_args()
    work = Path(args.workdir)
    truth = pair_corpus(work / "shards")
    cfg = BuildConfig()
    cfg = with_settings(cfg, {"read.inputs": [str(work / "shards")], "pack.output": str(work / "out"),
                              "read.partition_bytes": 400_000, "cluster.scheduler": "synchronous",
                              "quiet": True})
    summary = dedup_only(cfg)
    removed = {(r["source"], r["line"]): (r["kept_source"], r["kept_line"])
               for r in pq.read_table(work / "out" / "duplicates.parquet").to_pylist()}
    planted = {b for pairs in truth.values() for _, b, _ in pairs}
    for kind, label in (("exact", "exact copies"), ("high", "Jaccard >= 0.92"), ("low", "Jaccard <= 0.75")):
        joined = sum(removed.get(b) == a for a, b, _ in truth[kind])
        print(f"{label:<16} {joined:>4} of {len(truth[kind])} joined ({100 * joined / len(truth[kind]):.1f} %)")
    print(f"removed but not planted: {len(set(removed) - planted)}; threshold {summary['threshold']}, "
          f"{summary['bands']} bands x {summary['rows']} rows")


if __name__ == "__main__":
    main()
