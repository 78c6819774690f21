"""The build job: raw shards -> ingest -> tokenize -> (dedup) -> pack -> schedule, as Dask tasks,
written through one :class:`~pileprep.core.outdir.OutputDir`.

Stage outputs live under ``OUT_DIR/.pileprep-work/<stage>-<fingerprint>/``, where the
fingerprint hashes every setting that changes that stage's output. Every unit of work is a
:class:`~pileprep.runner.tasks.Task` with a completion record (or, like the appends to the
``.bin``, recorded by the driver as it goes), so a build killed at any point resumes from the
finished work: a changed setting gives a new fingerprint and redoes that stage and the ones
after it, never the ones before.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from pileprep.core import atomic
from pileprep.core.config import BuildConfig, fingerprint
from pileprep.core.errors import InputError, PilePrepError
from pileprep.core.files import REJECTS, REPORT, WORK_DIR, dataset_prefix
from pileprep.core.outdir import OutputDir
from pileprep.core.progress import log
from pileprep.formats import neox
from pileprep.formats.manifest import Manifest, entries
from pileprep.formats.parts import ShardResult, TokenPart
from pileprep.runner import prefork
from pileprep.runner.dask_runner import Runner
from pileprep.sources import Shard, discover
from pileprep.stages import report as reporting
from pileprep.stages.graph import run_ingest_and_tokenize, shard_key, tokenizer_identity, work_dirs
from pileprep.stages.pack import Appender, concat_text_files, pack
from pileprep.tokenizer import TokenizerInfo, resolve_engine
from pileprep.training import schedule_files

if TYPE_CHECKING:
    from pileprep.dedup.result import DedupResult
# The dedup code (numba) is imported where it is used: a plain build's driver never loads it,
# and its workers start sooner.


def validate(cfg: BuildConfig) -> tuple[int, int] | None:
    """Check every setting before any work starts, including those only a lower layer can
    judge (the LSH banding); return the banding a dedup build will use."""
    cfg.validate()
    if not cfg.dedup.enabled:
        return None
    from pileprep.dedup import lsh

    return lsh.banding(cfg.dedup)


def appender_for(out: Path, tokens_dir: Path, shards: Sequence[Shard], settings: dict,
                 cfg: BuildConfig) -> Appender:
    """Where this build's ``.bin`` grows. Its identity is known before any work, so a rerun can
    tell which token parts are in it already (and were deleted) before it reads anything."""
    identity = [tokens_dir.name, [shard_key(s) for s in shards]]
    if not cfg.dedup.enabled:
        return Appender(tokens_dir, identity, cfg.keep_work)
    identity.append(settings["dedup"])
    return Appender(out / WORK_DIR / f"kept-{fingerprint(*identity)}", identity, cfg.keep_work)


def same_build(settings: dict, shards: Sequence[Shard]):
    """Whether a manifest is of a build of these inputs and settings. A streamed source's size
    is known only after reading it: it is compared by name."""
    streamed = {s.name for s in shards if s.streamed}
    new_inputs = [(s.name, None if s.streamed else s.size) for s in shards]

    def same(old: dict) -> bool:
        old_inputs = [(i["name"], None if i["name"] in streamed else i["size"])
                      for i in old.get("inputs", [])]
        return old.get("settings") == settings and old_inputs == new_inputs
    return same


def build(cfg: BuildConfig, overwrite: bool = False) -> dict:
    """Build the dataset described by ``cfg``; return the report (also written to disk)."""
    bands_rows = validate(cfg)
    prefork.start_for(cfg)
    shards = discover(cfg.read.inputs)
    engine, why = resolve_engine(cfg.tokenize.tokenizer, cfg.tokenize.engine)
    info = TokenizerInfo.of(cfg.tokenize.tokenizer, engine)
    log(f"tokenize: {engine} engine ({why})", cfg.quiet)
    tok_id = tokenizer_identity(cfg.tokenize.tokenizer)
    settings = cfg.settings(bands_rows)
    settings["tokenize"]["tokenizer"] = tok_id
    with OutputDir(cfg.pack.output, "build", cfg.quiet) as out:
        out.guard(same_build(settings, shards), overwrite,
                  "a different build (other inputs or settings)")
        # Every setting checked: the workers spawn while the driver prepares the work, and shut
        # down while it writes the outputs.
        with Runner(cfg.cluster, cfg.quiet) as runner:
            return _build(cfg, shards, info, tok_id, settings, runner, out)


class _Timer:
    """Wall seconds of each named step, in the order they ran, for the report."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        yield
        self.seconds[name] = round(time.monotonic() - t0, 3)


def _build(cfg: BuildConfig, shards: Sequence[Shard], info: TokenizerInfo, tok_id: str,
           settings: dict, runner: Runner, out: OutputDir) -> dict:
    name = cfg.dataset_name
    log(f"pileprep: {len(shards)} shards -> {dataset_prefix(out.path, name)}.bin/.idx "
        f"(vocab {info.vocab_size}, {info.dtype})", cfg.quiet)
    timed = _Timer()
    # Every output is written to a staging directory and moved in only when all are complete:
    # a failed or killed build never leaves OUT_DIR holding a mix of two builds. Made before
    # the tokens: with --dedup its report is written there in the background.
    stage = out.stage()
    report = _Background()
    try:
        return _finish(cfg, shards, info, tok_id, settings, runner, out, timed, stage, report)
    finally:
        report.wait()


def _finish(cfg: BuildConfig, shards: Sequence[Shard], info: TokenizerInfo, tok_id: str,
            settings: dict, runner: Runner, out: OutputDir, timed: "_Timer", stage: Path,
            report: "_Background") -> dict:
    name = cfg.dataset_name
    shard_results, parts, appender, dup = _tokens(cfg, shards, info, settings, runner, out, timed,
                                                  stage, report)
    _check_kept(shard_results, cfg)
    busy = dict(runner.busy)
    runner.close(wait=False)

    with timed("pack"):
        log("pack: merging parts in (source, line) order", cfg.quiet)
        hashes = pack(parts, appender, stage, name, info.dtype)
        hashes[REJECTS] = concat_text_files([s.rejects_path for s in shard_results],
                                            stage / REJECTS)
    if cfg.schedule is not None:
        with timed("schedule"):
            hashes.update(schedule_files.build_for_dataset(stage, dataset_prefix(stage, name),
                                                           cfg.schedule, cfg.quiet))
    rep = reporting.make_report(shard_results, parts, timings=timed.seconds,
                                duplicates=len(dup.removed) if dup else 0)
    rep["rates"] = reporting.stage_rates(shard_results, timed.seconds, busy, appender.nbytes)
    if dup is not None:
        rep["dedup"], dedup_hashes = report.result()
        hashes.update(dedup_hashes)
    manifest = Manifest(info.dtype, settings, entries(stage, hashes),
                        [{"name": s.source, "size": s.size, "sha256": s.sha256}
                         for s in shard_results],
                        tokenizer={"vocab_size": info.vocab_size, "eod_id": info.eod_id,
                                   "sha256": tok_id.removeprefix("hub:")})
    atomic.write_json(stage / REPORT, rep)
    out.commit(stage, manifest.to_json())
    if cfg.schedule is not None:
        neox.write(out.path, dataset_prefix(out.path, name), cfg.schedule, cfg.tokenize.tokenizer)
    out.clean(cfg.keep_work)
    log(reporting.done_line(rep), cfg.quiet)
    for line in reporting.shard_warnings(rep):
        log(line, False)
    return rep


def _check_kept(shard_results: Sequence[ShardResult], cfg: BuildConfig) -> None:
    """Lines were read but every one was rejected: a setting is wrong, more likely than every
    document of the input (say, read.text_column naming a field no record has)."""
    read = sum(s.lines_read for s in shard_results)
    if read and not sum(s.accepted for s in shard_results):
        reasons: dict[str, int] = {}
        for s in shard_results:
            for why, n in s.rejected.items():
                reasons[why] = reasons.get(why, 0) + n
        said = ", ".join(f"{why} {n:,}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        raise InputError(f"all {read:,} lines read were rejected ({said}); check "
                         f"read.text_column ({cfg.read.text_column!r}) and the inputs")


class _Background:
    """A function run in a thread while the driver goes on; its result (or its error) later."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._result = self._error = None

    def start(self, fn) -> None:
        def run():
            try:
                self._result = fn()
            except BaseException as exc:  # noqa: BLE001 - raised again by result()
                self._error = exc

        self._thread = threading.Thread(target=run, name="pileprep-background", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Let a started thread finish: a process exiting (Ctrl-C, an error) while the thread is
        inside a C++ library (pyarrow writing the duplicates table) can abort ("terminate called
        without an active exception")."""
        if self._thread is not None:
            self._thread.join()

    def result(self):
        if self._thread is None:  # a driver bug: nothing was started
            raise PilePrepError("build: a background result was never started")
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def _tokens(cfg: BuildConfig, shards: Sequence[Shard], info: TokenizerInfo, settings: dict,
            runner: Runner, out: OutputDir, timed: _Timer, stage: Path, report: _Background
            ) -> tuple[list[ShardResult], list[TokenPart], Appender, "DedupResult | None"]:
    """Every shard read and tokenized into the appended ``.bin`` (without the duplicates, with
    ``--dedup``): the shards' results, the parts as packed, the appender, the dedup result.
    With ``--dedup``, ``report`` then gives the dedup summary and its files' hashes, drawn into
    ``stage`` in the background (while the workers write the kept tokens of a large corpus;
    while the driver packs, for a small one)."""
    ingest_fp, ingest_dir, tokens_dir = work_dirs(out.path, cfg, settings["tokenize"])
    appender = appender_for(out.path, tokens_dir, shards, settings, cfg)
    sig_dir = None
    if cfg.dedup.enabled:
        from pileprep.stages import dedup as dedup_stage

        dedup_stage.preload()
        sig_dir = dedup_stage.signatures_for(out.path, ingest_fp, cfg.dedup)
    with timed("ingest_and_tokenize"):
        shard_results, parts = run_ingest_and_tokenize(runner, shards, ingest_dir, tokens_dir,
                                                       cfg, info, sig_dir, appender)
    if not cfg.dedup.enabled:
        return shard_results, appender.parts(len(shard_results)), appender, None
    if not dedup_stage.needs_workers(shard_results, parts, cfg.dedup, info.dtype):
        runner.close(wait=False)
    with timed("dedup"):
        dup = dedup_stage.run(runner, shard_results, out.path, ingest_fp, cfg.dedup,
                              cfg.keep_work)
    from pileprep.dedup import report as dedup_report

    def draw(packed: list[TokenPart], removed: dict) -> None:
        # Once the removed documents are counted: the table and charts are written in a thread
        # while the driver goes on.
        dup.removed_by_subset = removed
        summary = dedup_report.summary(dup, reporting.subset_table(packed))
        report.start(lambda: (summary, dedup_stage.write_outputs(stage, dup, summary)))

    with timed("drop_duplicates"):
        parts, _ = dedup_stage.drop_duplicates(runner, appender, shard_results, parts, dup,
                                               info.dtype, draw)
    return shard_results, parts, appender, dup
