"""Progress lines of the overlapped ingest / tokenize / MinHash graph."""

from __future__ import annotations

import time
from typing import Sequence

from pileprep.core.progress import Progress, fmt_eta, log
from pileprep.runner.tasks import Task


class GraphProgress:
    """Progress of the overlapped ingest / tokenize / minhash graph, one line per stage, and,
    while shards are read, how far each one is (from the ingest tasks' reading records)."""

    def __init__(self, quiet: bool, ingest: Sequence[Task], minhash_on: bool):
        self.quiet = quiet
        self.bars = {"ingest": Progress("ingest", sum(t.weight for t in ingest), len(ingest),
                                        quiet=quiet, unit="shards"),
                     "tokenize": Progress("tokenize", 0, 0, quiet=quiet),
                     "dedup": Progress("minhash", 0, 0, quiet=quiet or not minhash_on)}

    def add(self, task: Task) -> None:
        bar = self.bars[task.stage]
        bar.total_items += 1
        bar.total_bytes += task.weight

    def done(self, task: Task, result) -> None:
        if task.stage == "ingest":  # a streamed source's size is known only now
            self.bars["ingest"].update(nbytes=result.size, items=1, docs=result.accepted)
        else:
            self.bars[task.stage].update(nbytes=task.weight, items=1,
                                         docs=getattr(result, "docs", 0))

    def read(self, records: dict[str, tuple[int, int, float]]) -> None:
        """Running ingest tasks' records: ``{shard: (bytes read, size, seconds reading)}``; a
        line for each shard every progress interval, with its rate and ETA, and one for the
        whole input: a shard is read as fast as its partitions are consumed (inline), so this
        is the build's own ETA."""
        now = time.monotonic()
        bar = self.bars["ingest"]
        if self.quiet or not records or now - bar.last < bar.interval:
            return
        bar.last = now
        for shard, (nbytes, size, seconds) in records.items():
            rate = nbytes / seconds if seconds > 0 else 0.0
            eta = (size - nbytes) / rate if rate > 0 else float("inf")
            log(f"[read] {shard} {nbytes / 1e6:,.1f}/{size / 1e6:,.1f} MB read  "
                f"{rate / 1e6:.2f} MB/s  ETA {fmt_eta(eta)}")
        if bar.total_bytes:  # the whole input: shards read, and what the running ones have read
            done = bar.bytes + sum(nbytes for nbytes, _, _ in records.values())
            rate = done / max(now - bar.start, 1e-9)
            eta = (bar.total_bytes - done) / rate if rate > 0 else float("inf")
            log(f"[read] all {bar.total_items} shards {done / 1e6:,.1f}/{bar.total_bytes / 1e6:,.1f} "
                f"MB read  {rate / 1e6:.2f} MB/s  ETA {fmt_eta(eta)}")

    def close(self) -> None:
        for bar in self.bars.values():
            if bar.total_items:
                bar.close()
