"""Run a build: ingest -> tokenize -> (dedup) -> pack -> schedule, as Dask tasks, with resume.

Stage outputs live under ``OUT_DIR/.pileprep-work/<stage>-<fingerprint>/``, where the
fingerprint hashes every setting that changes that stage's output. Every unit of work is a
:class:`~pileprep.build.tasks.Task` with a completion record, so a build killed at any point
resumes from the finished tasks: a changed setting gives a new fingerprint and redoes that stage
and the ones after it, never the ones before.
"""

from __future__ import annotations

import glob
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pileprep.build import consumers, prefork, report as reporting
from pileprep.build.consumers import Consumers, Inline
from pileprep.build.ingest import ingest_shard
from pileprep.build.ingest import READ_AHEAD, announcement, reading_record
from pileprep.build.pack import Appender, concat_text_files, pack
from pileprep.build.runner import SYNCHRONOUS, Runner
from pileprep.build.tasks import Task
from pileprep.core import atomic, faults, outdir
from pileprep.core.config import BuildConfig, fingerprint
from pileprep.core.errors import ConfigError, PilePrepError
from pileprep.core.files import DEDUP_SUMMARY, MANIFEST, REJECTS, REPORT, WORK_DIR, dataset_prefix
from pileprep.core.progress import Progress, fmt_eta, log
from pileprep.formats import charts, neox
from pileprep.formats.parts import Partition, ShardResult, TokenPart, preload_arrow
from pileprep.sources import Shard, discover
from pileprep.tokenizer import TokenizerInfo, resolve_engine
from pileprep.training import schedule_files

if TYPE_CHECKING:
    from pileprep.dedup.result import DedupResult
# The dedup code (numba) is imported where it is used: a plain build's driver never loads it,
# and its workers start sooner.

# Bump when the reader's accept/reject rules or partition layout change: old work is then stale.
INGEST_FORMAT = 2  # 2: a partition ends where its bytes reach the limit, not a row group later
TOKENS_FORMAT = 1
# While fewer tasks than workers + this wait, ingest tasks hand partitions off (consumers.py):
# a few queued partitions keep a worker that frees up busy between the driver's polls.
HANDOFF_QUEUE = 1
HANDOFF_FLAG = "handoff"


def validate(cfg: BuildConfig) -> tuple[int, int] | None:
    """Check every setting before any work starts, including those only a lower layer can
    judge (the LSH banding); return the banding a dedup build will use."""
    cfg.validate()
    if not cfg.dedup.enabled:
        return None
    from pileprep.dedup import minhash

    return minhash.banding(cfg.dedup)


def tokenizer_identity(spec: str) -> str:
    """The content hash of a tokenizer file, or the hub id: what the tokens depend on."""
    return atomic.sha256_file(spec) if os.path.exists(spec) else f"hub:{spec}"


def shard_key(shard: Shard) -> str:
    """What a shard's partitions and token parts are made from, known before it is read (its
    sha256 is known only after): partitions are tokenized while the shard is still read."""
    return fingerprint(shard.name, shard.identity())


def ingest_task(shard: Shard, index: int, workdir: Path, cfg: BuildConfig,
                inline: Inline | None = None) -> Task:
    # Bounded read-ahead needs partitions to be deleted as consumed, and readers running
    # meanwhile: not with --keep-work, nor on the synchronous scheduler (one task at a time).
    bounded = not cfg.keep_work and cfg.cluster.scheduler != SYNCHRONOUS
    return Task(f"ingest {shard.name}", "ingest", ingest_shard,
                (shard, index, str(workdir), cfg.read, READ_AHEAD if bounded else 0, inline),
                workdir / f"{shard.file_stem}.done.json", shard.identity(), ShardResult, shard.size,
                index)


class _Bars:
    """Progress of the overlapped ingest / tokenize / minhash graph, one line per stage, and,
    while shards are read, how far each one is (from the ingest tasks' reading records)."""

    def __init__(self, quiet: bool, ingest: Sequence[Task], minhash_on: bool):
        self.quiet = quiet
        self.bars = {"ingest": Progress("ingest", sum(t.weight for t in ingest), len(ingest), quiet=quiet),
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
        self.ingest = [ingest_task(s, i, ingest_dir, cfg, self._inline(i))
                       for i, s in enumerate(shards)]
        self.results: list[ShardResult | None] = [None] * len(shards)
        self.seen: list[int] = [0] * len(shards)  # partitions announced per shard
        self.running: set[int] = set()
        self.waiting: dict[str, int] = {}  # partition path -> consumers not finished
        self.announced: dict[str, Partition] = {}
        self.tokens: dict[tuple[int, int], TokenPart] = {}
        self.reused = {"tokenize": 0, "minhash": 0}
        self.inline_cpu: dict[str, float] = {}  # consumers' CPU inside this run's ingest tasks
        self.bars: _Bars | None = None

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
        self.bars = _Bars(self.cfg.quiet, todo, self.sig_dir is not None)
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
        if task.stage == "ingest":
            self.results[task.args[1]] = result
            for stage, seconds in result.inline_cpu.items():
                self.inline_cpu[stage] = self.inline_cpu.get(stage, 0.0) + seconds
            for stage, n in result.inline_reused.items():
                self._reuse(stage, n)
            return self._shard_read(task.args[1], result)
        part = self.announced[task.args[0].path if task.stage == "tokenize" else task.args[0]]
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
    for task, result in runner.run_graph(initial, graph.expand, graph.poll):
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


def _signature_dir(out: Path, ingest_fp: str, cfg: BuildConfig) -> Path:
    from pileprep.build import dedup as dedup_stage

    sig_dir = dedup_stage.signature_dir(out, ingest_fp, cfg.dedup)
    sig_dir.mkdir(parents=True, exist_ok=True)
    return sig_dir


def _partitions(shard_results: Sequence[ShardResult]) -> tuple[list[Partition], list[str]]:
    parts = [p for s in shard_results for p in s.partitions]
    return parts, [s.sha256 for s in shard_results for _ in s.partitions]


def run_dedup(runner: Runner, shard_results: Sequence[ShardResult], out: Path, ingest_fp: str,
              cfg: BuildConfig, signatures_done: bool = False) -> DedupResult:
    from pileprep.build import dedup as dedup_stage

    parts, shas = _partitions(shard_results)
    sig_dir = _signature_dir(out, ingest_fp, cfg)
    return dedup_stage.dedup(runner, parts, shas, sig_dir, out / WORK_DIR, cfg.dedup,
                             signatures_done, cfg.keep_work)


def appender_for(out: Path, tokens_dir: Path, shards: Sequence[Shard], settings: dict,
                 cfg: BuildConfig) -> Appender:
    """Where this build's ``.bin`` grows. Its identity is known before any work, so a rerun can
    tell which token parts are in it already (and were deleted) before it reads anything."""
    identity = [tokens_dir.name, [shard_key(s) for s in shards]]
    if not cfg.dedup.enabled:
        return Appender(tokens_dir, identity, cfg.keep_work)
    identity.append(settings["dedup"])
    return Appender(out / WORK_DIR / f"kept-{fingerprint(*identity)}", identity, cfg.keep_work)


def drop_duplicates(appender: Appender, shard_results: Sequence[ShardResult],
                    parts: Sequence[TokenPart], dup: DedupResult, info: TokenizerInfo):
    """Append the token parts without the removed documents; the parts as packed, and what was
    removed per subset."""
    from pileprep.dedup import apply as dedup_apply

    positions = [(i, p.index) for i, s in enumerate(shard_results) for p in s.partitions]
    drops = dict(zip(positions, dedup_apply.rows_by_partition(dup.removed, dup.offsets)))
    removed = []

    def select(part: TokenPart, pos, tokens: bool):
        data, kept, gone = dedup_apply.drop_documents(part, drops[pos], str(appender.path.parent),
                                                      info.dtype, tokens)
        removed.append(gone)
        faults.checkpoint("dedup")
        return data, kept

    appender.select = select
    for pos, part in zip(positions, parts):
        appender.add(pos, part)
    for i, s in enumerate(shard_results):
        appender.shard_done(i, len(s.partitions))
    return appender.parts(len(shard_results)), reporting.sum_subsets(removed)


def write_dedup_outputs(out: Path, dup: DedupResult, summary: dict) -> dict[str, str]:
    """The removed-documents table and the human-readable dedup report; ``{name: sha256}``."""
    from pileprep.dedup import apply as dedup_apply, report as dedup_report

    hashes = {dedup_apply.TABLE: dedup_apply.write_table(
        dup.removed, dup.offsets, dup.partitions, dup.signature_paths, out / dedup_apply.TABLE)}
    hashes.update(dedup_report.write(out, dup, summary))
    return hashes


def finish_interrupted(out: Path, quiet: bool) -> None:
    if atomic.finish_interrupted(out):
        log(f"finished moving the outputs of an interrupted build into {out}", quiet)


def _check_output_dir(out: Path, settings: dict, shards: Sequence[Shard], overwrite: bool) -> None:
    """Refuse to overwrite a finished build of other inputs or settings, unless asked to."""
    manifest = out / MANIFEST
    if not manifest.exists() or overwrite:
        return
    old = atomic.read_json(manifest)
    # A streamed source's size is known only after reading it: compare its name only.
    streamed = {s.name for s in shards if s.streamed}
    old_inputs = [(i["name"], None if i["name"] in streamed else i["size"])
                  for i in old.get("inputs", [])]
    new_inputs = [(s.name, None if s.streamed else s.size) for s in shards]
    if old.get("settings") != settings or old_inputs != new_inputs:
        raise ConfigError(f"output directory {out} holds a different build (other inputs or "
                          "settings); choose another --output or pass --overwrite")


def _work_dirs(out: Path, cfg: BuildConfig, tokenize_settings: dict) -> tuple[str, Path, Path]:
    ingest_fp = fingerprint(INGEST_FORMAT, cfg.read.stage_settings())
    tokens_fp = fingerprint(TOKENS_FORMAT, ingest_fp, tokenize_settings)
    return ingest_fp, out / WORK_DIR / f"ingest-{ingest_fp}", out / WORK_DIR / f"tokens-{tokens_fp}"


def build(cfg: BuildConfig, overwrite: bool = False) -> dict:
    """Build the dataset described by ``cfg``; return the report (also written to disk)."""
    bands_rows = validate(cfg)
    prefork.start_for(cfg)
    shards = discover(cfg.read.inputs)
    engine, why = resolve_engine(cfg.tokenize.tokenizer, cfg.tokenize.engine)
    info = TokenizerInfo.of(cfg.tokenize.tokenizer, engine)
    log(f"tokenize: {engine} engine ({why})", cfg.quiet)
    tok_id = tokenizer_identity(cfg.tokenize.tokenizer)
    out = Path(cfg.pack.output)
    settings = cfg.settings(bands_rows)
    settings["tokenize"]["tokenizer"] = tok_id
    with outdir.locked(out, "build"):
        finish_interrupted(out, cfg.quiet)
        _check_output_dir(out, settings, shards, overwrite)
        # Every setting checked: the workers spawn while the driver prepares the work, and shut
        # down while it writes the outputs.
        with Runner(cfg.cluster, cfg.quiet) as runner:
            return _build(cfg, shards, info, tok_id, settings, runner)


def _build(cfg: BuildConfig, shards: Sequence[Shard], info: TokenizerInfo, tok_id: str,
           settings: dict, runner: Runner) -> dict:
    out = Path(cfg.pack.output)
    ingest_fp, ingest_dir, tokens_dir = _work_dirs(out, cfg, settings["tokenize"])
    name = cfg.dataset_name
    log(f"pileprep: {len(shards)} shards -> {dataset_prefix(out, name)}.bin/.idx "
        f"(vocab {info.vocab_size}, {info.dtype})", cfg.quiet)

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    appender = appender_for(out, tokens_dir, shards, settings, cfg)
    sig_dir = None
    if cfg.dedup.enabled:
        charts.preload()  # the dedup report's charts are drawn after the last stage
        sig_dir = _signature_dir(out, ingest_fp, cfg)
    shard_results, parts = run_ingest_and_tokenize(runner, shards, ingest_dir, tokens_dir,
                                                   cfg, info, sig_dir, appender)
    timings["ingest_and_tokenize"] = round(time.monotonic() - t0, 3)
    dup = None
    if cfg.dedup.enabled:
        t_dedup = time.monotonic()
        dup = run_dedup(runner, shard_results, out, ingest_fp, cfg, signatures_done=True)
        timings["dedup"] = round(time.monotonic() - t_dedup, 3)
        t_drop = time.monotonic()
        parts, dup.removed_by_subset = drop_duplicates(appender, shard_results, parts, dup, info)
        timings["drop_duplicates"] = round(time.monotonic() - t_drop, 3)
    else:
        parts = appender.parts(len(shard_results))
    busy = dict(runner.busy)
    runner.close(wait=False)

    # Every output is written to a staging directory and moved in only when all are complete:
    # a failed or killed build never leaves OUT_DIR holding a mix of two builds.
    stage = atomic.fresh_stage(out)
    t1 = time.monotonic()
    log("pack: merging parts in (source, line) order", cfg.quiet)
    hashes = pack(parts, appender, stage, name, info.dtype)
    hashes[REJECTS] = concat_text_files([s.rejects_path for s in shard_results], stage / REJECTS)
    timings["pack"] = round(time.monotonic() - t1, 3)
    if cfg.schedule is not None:
        t2 = time.monotonic()
        hashes.update(schedule_files.build_for_dataset(stage, dataset_prefix(stage, name),
                                                       cfg.schedule, cfg.quiet))
        timings["schedule"] = round(time.monotonic() - t2, 3)

    rep = reporting.make_report(shard_results, parts, timings=timings,
                                duplicates=len(dup.removed) if dup else 0)
    rep["rates"] = reporting.stage_rates(shard_results, timings, busy, appender.nbytes)
    if dup is not None:
        from pileprep.dedup import report as dedup_report

        rep["dedup"] = dedup_report.summary(dup, rep["subsets"])
        hashes.update(write_dedup_outputs(stage, dup, rep["dedup"]))
    outputs = {n: {"bytes": (stage / n).stat().st_size, "sha256": sha}
               for n, sha in sorted(hashes.items())}
    manifest = reporting.make_manifest(shard_results, settings, info,
                                       tok_id.removeprefix("hub:"), outputs)
    atomic.write_json(stage / REPORT, rep)
    atomic.write_json(stage / MANIFEST, manifest)
    atomic.commit(stage, out)
    if cfg.schedule is not None:
        neox.write(out, dataset_prefix(out, name), cfg.schedule, cfg.tokenize.tokenizer)
    if not cfg.keep_work:
        shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    log(reporting.done_line(rep), cfg.quiet)
    for line in reporting.shard_warnings(rep):
        log(line, False)
    return rep


def dedup_only(cfg: BuildConfig) -> dict:
    """Ingest and find near-duplicates only: ``duplicates.parquet``, ``dedup.json`` and the
    Markdown report. No tokens, so removal is counted in documents and text bytes."""
    from pileprep.dedup import apply as dedup_apply, report as dedup_report

    cfg.dedup.enabled = True
    validate(cfg)
    prefork.start_for(cfg, tokenize=False)
    shards = discover(cfg.read.inputs)
    out = Path(cfg.pack.output)
    with outdir.locked(out, "dedup"):
        return _dedup_only(cfg, shards, out)


def _dedup_only(cfg: BuildConfig, shards: Sequence[Shard], out: Path) -> dict:
    from pileprep.dedup import apply as dedup_apply, report as dedup_report

    finish_interrupted(out, cfg.quiet)
    ingest_fp, ingest_dir, tokens_dir = _work_dirs(out, cfg, {})
    sig_dir = _signature_dir(out, ingest_fp, cfg)
    with Runner(cfg.cluster, cfg.quiet) as runner:
        shard_results, _ = run_ingest_and_tokenize(runner, shards, ingest_dir, tokens_dir, cfg,
                                                   None, sig_dir)
        dup = run_dedup(runner, shard_results, out, ingest_fp, cfg, signatures_done=True)
    kept = dedup_apply.subset_counts(dup.signature_paths, dup.removed, dup.offsets)
    dup.removed_by_subset = {n: [v["removed"], 0, 0] for n, v in kept.items()}
    summary = dedup_report.summary(dup, {n: {"documents": v["kept"]} for n, v in kept.items()})
    summary["tokens_counted"] = False
    summary["lines_read"] = sum(s.lines_read for s in shard_results)
    summary["rejected_total"] = sum(sum(s.rejected.values()) for s in shard_results)
    stage = atomic.fresh_stage(out)
    write_dedup_outputs(stage, dup, summary)
    atomic.write_json(stage / DEDUP_SUMMARY, summary)
    atomic.commit(stage, out)
    if not cfg.keep_work:
        shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    return summary
