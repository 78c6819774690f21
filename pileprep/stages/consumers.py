"""A partition's consumers: the tasks that read an ingest partition (tokenize, and MinHash with
``--dedup``), described once for the driver, which queues them, and for the ingest task, which
runs them itself on a partition it holds in memory (*inline*).

Inline, a partition is never written to scratch disk nor read back, and its text stays the
Python strings the JSON reader made (docs/benchmarks.md has what that saves).
But one shard is then read and tokenized by one core. So the driver keeps a *hand-off* flag
file while fewer tasks wait than would keep every worker busy (the last shards of a build, or
fewer shards than workers); while it exists, ingest tasks write the partitions they cut for any
worker to consume, as without inline work. Who consumes a partition changes neither where the
shard is cut (ingest.py) nor its outputs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pileprep.runner.tasks import Stage, Task, execute_timed
from pileprep.stages.tokenize import tokenize_partition
from pileprep.core.config import BuildConfig
from pileprep.formats.parts import Partition, Records, TokenPart
from pileprep.tokenizer import TokenizerInfo

Position = tuple[int, int]  # (shard index, partition index)


def order(part: Partition) -> int:
    """The partition's place in the dataset, as a task order: earlier parts are consumed first."""
    return (part.shard_index << 24) + min(part.index, (1 << 24) - 1)


def tokenize_task(part: Partition, key: str, workdir: Path, cfg: BuildConfig,
                  info: TokenizerInfo) -> Task:
    return Task(name=f"tokenize {part.stem}", stage=Stage.TOKENIZE, fn=tokenize_partition,
                kwargs=dict(part=part, out_dir=str(workdir), cfg=cfg.tokenize, info=info,
                            shard_sha256=key),
                done=workdir / f"{part.stem}.done.json", inputs=[key, part.rows],
                result_type=TokenPart, weight=part.text_bytes, order=order(part))


@dataclass(frozen=True)
class Consumers:
    """The consumer tasks of the partitions of one shard, whose ``key`` says what its parts are
    made from: small enough to travel with the shard's ingest task."""

    key: str
    cfg: BuildConfig
    info: TokenizerInfo | None  # None: no tokenizing (``pileprep dedup``)
    tokens_dir: Path
    sig_dir: Path | None  # None: no MinHash

    def of(self, part: Partition) -> list[Task]:
        key = self.key
        tasks = []
        if self.info is not None:
            tasks.append(tokenize_task(part, key, self.tokens_dir, self.cfg, self.info))
        if self.sig_dir is not None:
            # Imported here: a worker of a build without --dedup never loads the dedup code.
            from pileprep.stages import dedup as dedup_stage

            tasks += [dataclasses.replace(t, order=order(part)) for t in
                      dedup_stage.signature_tasks([part], [key], self.sig_dir, self.cfg.dedup)]
        return tasks


def finished(task: Task, part: Partition, appended: Position | None) -> Any | None:
    """A consumer's earlier result. A token part at or before ``appended`` (the last part in the
    dataset's ``.bin``) counts even when its ``.bin`` is gone: it was appended, then deleted."""
    claimed = appended is not None and (part.shard_index, part.index) <= appended
    return task.finished(consumed=lambda result, path: claimed and path == result.bin)


@dataclass(frozen=True)
class Inline:
    """What an ingest task needs to consume its partitions itself."""

    consumers: Consumers
    handoff: str | None  # while this file exists, partitions are written for others instead
    appended: Position | None  # the dataset's .bin held the parts up to here when the build began

    def now(self) -> bool:
        """Whether the partition starting now is consumed inline."""
        return self.handoff is None or not os.path.exists(self.handoff)

    def consumed(self, part: Partition) -> bool:
        """Whether every consumer of the partition has its completion record already: then
        this is a retried read (its task ran on a worker that died) re-cutting a partition the
        driver has had consumed, and nobody would delete a copy written now (a read that waits
        for its partitions' readers would wait forever)."""
        return all(t.finished(consumed=lambda result, path: True) is not None
                   for t in self.consumers.of(part))

    def run(self, part: Partition, records: Records, cpu: dict[str, float],
            reused: dict[str, int]) -> None:
        """Run the partition's unfinished consumers on ``records``, each writing its completion
        record as on a worker; add their CPU seconds, and the finished ones found, by stage."""
        for task in self.consumers.of(part):
            if finished(task, part, self.appended) is not None:
                reused[task.stage] = reused.get(task.stage, 0) + 1
                continue
            _, seconds = execute_timed(dataclasses.replace(task, kwargs={**task.kwargs, "records": records}))
            cpu[task.stage] = cpu.get(task.stage, 0.0) + seconds
