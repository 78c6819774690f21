"""The overlapped ingest -> tokenize (-> MinHash) graph of a build's first stages, and the
work directories it fills.

A partition is tokenized (and signed) as soon as its shard's ingest task cuts it; see
:class:`_Graph`. Used by the build and dedup-only jobs and by ``align`` (raw text tokenized as
a build would).
"""

from __future__ import annotations

import glob
import os
import uuid
from pathlib import Path
from typing import Sequence

from pileprep.core import atomic
from pileprep.core.config import BuildConfig, fingerprint
from pileprep.core.errors import PilePrepError
from pileprep.core.files import WORK_DIR
from pileprep.core.progress import log
from pileprep.formats.parts import Partition, ShardResult, TokenPart, preload_arrow
from pileprep.runner.dask_runner import SYNCHRONOUS, Runner
from pileprep.runner.tasks import Stage, Task
from pileprep.sources import Shard
from pileprep.stages import consumers
from pileprep.stages.consumers import Consumers, Inline
from pileprep.stages.ingest import READ_AHEAD, announcement, ingest_shard, reading_record
from pileprep.stages.pack import Appender
from pileprep.stages.progress import GraphProgress
from pileprep.tokenizer import TokenizerInfo

# and its workers start sooner.

# Bump when the reader's accept/reject rules or partition layout change: old work is then stale.
INGEST_FORMAT = 2  # 2: a partition ends where its bytes reach the limit, not a row group later
TOKENS_FORMAT = 1
# While fewer tasks than workers + this wait, ingest tasks hand partitions off (consumers.py):
# a few queued partitions keep a worker that frees up busy between the driver's polls.
HANDOFF_QUEUE = 1
HANDOFF_FLAG = "handoff"



def tokenizer_identity(spec: str) -> str:
    """The content hash of a tokenizer file, or the hub id: what the tokens depend on."""
    return atomic.sha256_file(spec) if os.path.exists(spec) else f"hub:{spec}"


def shard_key(shard: Shard) -> str:
    """What a shard's partitions and token parts are made from, known before it is read (its
    sha256 is known only after): partitions are tokenized while the shard is still read."""
    return fingerprint(shard.name, shard.identity())


def ingest_task(shard: Shard, index: int, workdir: Path, cfg: BuildConfig,
                inline: Inline | None = None, stop: Path | None = None) -> Task:
    # Bounded read-ahead needs partitions to be deleted as consumed, and readers running
    # meanwhile: not with --keep-work, nor on the synchronous scheduler (one task at a time).
    bounded = not cfg.keep_work and cfg.cluster.scheduler != SYNCHRONOUS
    identity = shard.identity()
    return Task(name=f"ingest {shard.name}", stage=Stage.INGEST, fn=ingest_shard,
                kwargs=dict(shard=shard, shard_index=index, workdir=str(workdir), cfg=cfg.read,
                            read_ahead=READ_AHEAD if bounded else 0, inline=inline,
                            identity=identity, stop=str(stop) if stop else None),
                done=workdir / f"{shard.file_stem}.done.json", inputs=identity,
                result_type=ShardResult, weight=shard.size, order=index)

class _Graph:
    """The overlapped ingest -> tokenize (-> minhash) work, and the scratch files it consumes.

    A partition is announced by its ingest task as soon as it is cut. Its consumers (tokenize;
    minhash with ``sig_dir``) ran already when the ingest task consumed it inline; else they are
    queued then, and once every one has finished (its completion record written) the partition
    file is deleted unless ``keep_work``. Without dedup a token part goes to the ``appender``
    (which deletes its ``.bin`` once appended). On a rerun, a deleted file counts as present
    when its consumers' records say so.
    """

    def __init__(self, shards, ingest_dir, tokens_dir, cfg, info, sig_dir, appender, workers):
        self.shards, self.ingest_dir, self.tokens_dir = shards, ingest_dir, tokens_dir
        self.cfg, self.info, self.sig_dir, self.appender = cfg, info, sig_dir, appender
        # With dedup, token parts wait for the duplicates to be known; the appender's record
        # still says which of them a killed run had appended (and deleted) already.
        self.append = appender is not None and info is not None and sig_dir is None
        self.specs = [Consumers(shard_key(s), cfg, info, tokens_dir, sig_dir) for s in shards]
        self.workers = workers
        self.flag = ingest_dir / HANDOFF_FLAG
        # Up when this run is given up: its reads still running on a cluster stop (a rerun has
        # another flag, so what is left of this run never stops it).
        self.stop = ingest_dir / f"stop-{uuid.uuid4().hex[:12]}"
        self.ingest = [ingest_task(s, i, ingest_dir, cfg, self._inline(i), self.stop)
                       for i, s in enumerate(shards)]
        self.results: list[ShardResult | None] = [None] * len(shards)
        self.seen: list[int] = [0] * len(shards)  # partitions announced per shard
        self.running: set[int] = set()
        self.waiting: dict[str, int] = {}  # partition path -> consumers not finished
        self.announced: dict[str, Partition] = {}
        self.tokens: dict[tuple[int, int], TokenPart] = {}
        self.reused = {"tokenize": 0, "minhash": 0}
        self.inline_cpu: dict[str, float] = {}  # consumers' CPU inside this run's ingest tasks
        self.bars: GraphProgress | None = None

    def _inline(self, shard: int) -> Inline | None:
        """How the shard's ingest task consumes partitions inline: always with one worker
        (nobody else would), never with --keep-work (the partitions are kept for reuse), else
        while the hand-off flag is down."""
        if self.cfg.keep_work:
            return None
        appended = self.appender.last if self.appender is not None else None
        return Inline(self.specs[shard], str(self.flag) if self.workers > 1 else None, appended)

    def handoff(self, outstanding: int) -> None:
        """Raise the hand-off flag while fewer than ``workers + HANDOFF_QUEUE`` tasks are
        unfinished (a worker is, or soon will be, without work), lower it otherwise."""
        if outstanding < self.workers + HANDOFF_QUEUE:
            if not self.flag.exists():
                self.flag.touch()
        else:
            self.flag.unlink(missing_ok=True)

    def consumers(self, part: Partition) -> list[Task]:
        return self.specs[part.shard_index].of(part)

    def _finished(self, task: Task, part: Partition):
        appended = self.appender.last if self.appender is not None else None
        return consumers.finished(task, part, appended)

    def consumed(self, shard: ShardResult, path: str) -> bool:
        """Whether a deleted output of an ingest task was consumed: every reader finished."""
        part = next((p for p in shard.partitions if p.path == path), None)
        return part is not None and all(self._finished(t, part) is not None
                                        for t in self.consumers(part))

    def start(self) -> list[Task]:
        """The first tasks: unfinished ingest, and the consumers of reused shards' partitions."""
        todo = []
        for i, task in enumerate(self.ingest):
            self.results[i] = task.finished(consumed=self.consumed)
            if self.results[i] is None:
                self._forget_announcements(i)
                todo.append(task)
                self.running.add(i)
        if len(todo) < len(self.shards):
            log(f"ingest: reusing {len(self.shards) - len(todo)} of {len(self.shards)} shards",
                self.cfg.quiet)
        self.bars = GraphProgress(self.cfg.quiet, todo, self.sig_dir is not None)
        jobs = list(todo)
        for i, result in enumerate(self.results):
            if result is not None:
                jobs += self._shard_read(i, result, fresh=False)
        self.handoff(len(jobs))  # before any ingest task starts: one shard, two workers
        return jobs

    def _forget_announcements(self, i: int) -> None:
        """Announcements left by a killed read of this shard: the rerun announces again."""
        stem = self.shards[i].file_stem
        for path in self.ingest_dir.glob(f"{glob.escape(stem)}.*.part.json"):
            path.unlink(missing_ok=True)

    def _announce(self, part: Partition, fresh: bool = True) -> list[Task]:
        """Queue the consumers of a partition cut by an ingest task of this run (``fresh``) or
        of an earlier one."""
        self.announced[part.path] = part
        jobs = []
        for task in self.consumers(part):
            done = self._finished(task, part)
            if done is None:
                jobs.append(task)  # inline consumers always finished: a lost record fails it
                self.bars.add(task)
            elif part.inline and fresh:  # consumed inline just now: progress, not reuse
                self.bars.add(task)
                self.bars.done(task, done)
                self._consumer_done(task, part, done)
            else:
                self._reuse(task.stage, 1)
                self._consumer_done(task, part, done)
        self.waiting[part.path] = len(jobs)
        if not jobs:
            self._delete(part.path)
        self.seen[part.shard_index] = part.index + 1
        return jobs

    def _reuse(self, stage: str, n: int) -> None:
        """Count consumers found finished by an earlier run (MinHash tasks are stage dedup)."""
        self.reused["tokenize" if stage == "tokenize" else "minhash"] += n

    def _shard_read(self, i: int, result: ShardResult, fresh: bool = True) -> list[Task]:
        self.running.discard(i)
        jobs = [job for part in result.partitions[self.seen[i]:]
                for job in self._announce(part, fresh)]
        if self.append:
            self.appender.shard_done(i, len(result.partitions))
        return jobs

    def _consumer_done(self, task: Task, part: Partition, result) -> None:
        if task.stage != "tokenize":
            return
        pos = (part.shard_index, part.index)
        self.tokens[pos] = result
        if self.append:
            self.appender.add(pos, result)

    def expand(self, task: Task, result) -> list[Task]:
        if task.stage == Stage.INGEST:
            self.results[task.kwargs["shard_index"]] = result
            for stage, seconds in result.inline_cpu.items():
                self.inline_cpu[stage] = self.inline_cpu.get(stage, 0.0) + seconds
            for stage, n in result.inline_reused.items():
                self._reuse(stage, n)
            return self._shard_read(task.kwargs["shard_index"], result)
        part = self.announced[task.kwargs["part"].path if task.stage == Stage.TOKENIZE
                              else task.kwargs["part_path"]]
        self._consumer_done(task, part, result)
        self.waiting[part.path] -= 1
        if self.waiting[part.path] == 0:
            self._delete(part.path)
        return []

    def poll(self, outstanding: int) -> list[Task]:
        """Partitions announced, and read progress, of the shards being read; the hand-off
        flag for the ``outstanding`` (submitted, unfinished) tasks."""
        self.handoff(outstanding)
        jobs, reading = [], {}
        for i in sorted(self.running):
            stem = self.shards[i].file_stem
            while (path := announcement(self.ingest_dir, stem, self.seen[i])).exists():
                jobs += self._announce(Partition(**atomic.read_json(path)))
            try:
                rec = atomic.read_json(reading_record(self.ingest_dir, stem))
            except (FileNotFoundError, PilePrepError):
                continue
            reading[self.shards[i].name] = (rec["read"], rec["size"], rec["seconds"])
        self.bars.read(reading)
        return jobs

    def _delete(self, path: str) -> None:
        if not self.cfg.keep_work:
            Path(path).unlink(missing_ok=True)


def run_ingest_and_tokenize(runner: Runner, shards: Sequence[Shard], ingest_dir: Path,
                            tokens_dir: Path, cfg: BuildConfig, info: TokenizerInfo | None,
                            sig_dir: Path | None = None, appender: Appender | None = None
                            ) -> tuple[list[ShardResult], list[TokenPart]]:
    """Ingest, tokenize and MinHash overlapped: a partition is tokenized (and, with ``sig_dir``,
    signed) as soon as it is cut from its shard, before the next shard is read, so no core
    idles between the stages. Without ``info`` only ingest (and signatures) run. With an
    ``appender`` token parts are appended to the dataset's ``.bin`` as they are ready."""
    for d in (ingest_dir, tokens_dir):
        d.mkdir(parents=True, exist_ok=True)
    preload_arrow()  # while the workers start (runner.workers waits for them)
    graph = _Graph(shards, ingest_dir, tokens_dir, cfg, info, sig_dir, appender, runner.workers)
    initial = graph.start()
    # A failure, Ctrl-C or a lost scheduler: the reads still running stop at their next cut.
    for task, result in runner.run_graph(initial, graph.expand, graph.poll, graph.stop.touch):
        graph.bars.done(task, result)
    graph.bars.close()
    graph.flag.unlink(missing_ok=True)
    runner.move_busy("ingest", graph.inline_cpu)  # consumers run inline count for their stage
    total = sum(len(s.partitions) for s in graph.results)
    for stage, n in graph.reused.items():
        if n:
            log(f"{stage}: reusing {n} of {total} partitions", cfg.quiet)
    parts = ([graph.tokens[(i, p.index)] for i, s in enumerate(graph.results) for p in s.partitions]
             if info is not None else [])
    return graph.results, parts  # type: ignore[return-value]


def work_dirs(out: Path, cfg: BuildConfig, tokenize_settings: dict) -> tuple[str, Path, Path]:
    ingest_fp = fingerprint(INGEST_FORMAT, cfg.read.stage_settings())
    tokens_fp = fingerprint(TOKENS_FORMAT, ingest_fp, tokenize_settings)
    return ingest_fp, out / WORK_DIR / f"ingest-{ingest_fp}", out / WORK_DIR / f"tokens-{tokens_fp}"
