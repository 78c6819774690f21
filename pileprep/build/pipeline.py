"""Run a build: ingest -> tokenize -> (dedup) -> pack -> schedule, as Dask tasks, with resume.

Stage outputs live under ``OUT_DIR/.pileprep-work/<stage>-<fingerprint>/``, where the
fingerprint hashes every setting that changes that stage's output. Every unit of work is a
:class:`~pileprep.build.tasks.Task` with a completion record, so a build killed at any point
resumes from the finished tasks: a changed setting gives a new fingerprint and redoes that stage
and the ones after it, never the ones before.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Sequence

from pileprep.build import dedup as dedup_stage, report as reporting
from pileprep.build.ingest import ingest_shard
from pileprep.build.pack import concat_text_files, pack
from pileprep.build.runner import Runner
from pileprep.build.tasks import Task
from pileprep.build.tokenize import tokenize_partition
from pileprep.core import atomic
from pileprep.core.config import BuildConfig, fingerprint
from pileprep.core.errors import ConfigError
from pileprep.core.files import DEDUP_SUMMARY, MANIFEST, REJECTS, REPORT, WORK_DIR, dataset_prefix
from pileprep.core.progress import Progress, log
from pileprep.dedup import apply as dedup_apply, minhash, report as dedup_report
from pileprep.dedup.result import DedupResult
from pileprep.formats import charts, neox
from pileprep.formats.parts import Partition, ShardResult, TokenPart
from pileprep.sources import Shard, discover
from pileprep.tokenizer import TokenizerInfo, resolve_engine
from pileprep.training import schedule_files

# Bump when the reader's accept/reject rules or partition layout change: old work is then stale.
INGEST_FORMAT = 1
TOKENS_FORMAT = 1


def validate(cfg: BuildConfig) -> tuple[int, int] | None:
    """Check every setting before any work starts, including those only a lower layer can
    judge (the LSH banding); return the banding a dedup build will use."""
    cfg.validate()
    return minhash.banding(cfg.dedup) if cfg.dedup.enabled else None


def tokenizer_identity(spec: str) -> str:
    """The content hash of a tokenizer file, or the hub id: what the tokens depend on."""
    return atomic.sha256_file(spec) if os.path.exists(spec) else f"hub:{spec}"


def ingest_task(shard: Shard, index: int, workdir: Path, cfg: BuildConfig) -> Task:
    return Task(f"ingest {shard.name}", "ingest", ingest_shard,
                (shard, index, str(workdir), cfg.read), workdir / f"{shard.file_stem}.done.json",
                shard.identity(), ShardResult, shard.size)


def tokenize_task(part: Partition, shard_sha: str, workdir: Path, cfg: BuildConfig,
                  info: TokenizerInfo) -> Task:
    return Task(f"tokenize {part.stem}", "tokenize", tokenize_partition,
                (part, str(workdir), cfg.tokenize, info, shard_sha),
                workdir / f"{part.stem}.done.json", shard_sha, TokenPart, part.text_bytes)


class _Bars:
    """Progress of the overlapped ingest / tokenize / minhash graph, one line per stage."""

    def __init__(self, quiet: bool, ingest: Sequence[Task], minhash_on: bool):
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

    def close(self) -> None:
        for bar in self.bars.values():
            if bar.total_items:
                bar.close()


def run_ingest_and_tokenize(runner: Runner, shards: Sequence[Shard], ingest_dir: Path,
                            tokens_dir: Path, cfg: BuildConfig, info: TokenizerInfo | None,
                            sig_dir: Path | None = None
                            ) -> tuple[list[ShardResult], list[TokenPart]]:
    """Ingest, tokenize and MinHash overlapped: a shard's partitions are tokenized (and, with
    ``sig_dir``, signed) as soon as it is read, so no core idles between the stages. Without
    ``info`` only ingest (and signatures) run."""
    for d in (ingest_dir, tokens_dir):
        d.mkdir(parents=True, exist_ok=True)
    ingest = [ingest_task(s, i, ingest_dir, cfg) for i, s in enumerate(shards)]
    shard_results: list[ShardResult | None] = [t.finished() for t in ingest]
    todo = [t for t, r in zip(ingest, shard_results) if r is None]
    if len(todo) < len(shards):
        log(f"ingest: reusing {len(shards) - len(todo)} of {len(shards)} shards", cfg.quiet)
    bars = _Bars(cfg.quiet, todo, sig_dir is not None)
    tokens: dict[str, TokenPart] = {}  # by partition stem
    reused = {"tokenize": 0, "minhash": 0}

    def after_ingest(shard: ShardResult) -> list[Task]:
        """The tasks a read shard enables; finished ones are taken as they are."""
        jobs = []
        if info is not None:
            for part in shard.partitions:
                task = tokenize_task(part, shard.sha256, tokens_dir, cfg, info)
                done = task.finished()
                if done is None:
                    jobs.append(task)
                else:
                    tokens[part.stem] = done
                    reused["tokenize"] += 1
        if sig_dir is not None:
            for task in dedup_stage.signature_tasks(
                    shard.partitions, [shard.sha256] * len(shard.partitions), sig_dir, cfg.dedup):
                if task.finished() is None:
                    jobs.append(task)
                else:
                    reused["minhash"] += 1
        for job in jobs:
            bars.add(job)
        return jobs

    def expand(task: Task, result) -> list[Task]:
        if task.stage != "ingest":
            return []
        shard_results[task.args[1]] = result
        return after_ingest(result)

    initial = list(todo)
    for shard in shard_results:
        if shard is not None:
            initial += after_ingest(shard)
    for task, result in runner.run_graph(initial, expand):
        if task.stage == "tokenize":
            tokens[Path(result.bin).stem] = result
        bars.done(task, result)
    bars.close()
    total = sum(len(s.partitions) for s in shard_results)
    for stage, n in reused.items():
        if n:
            log(f"{stage}: reusing {n} of {total} partitions", cfg.quiet)
    parts = ([tokens[p.stem] for s in shard_results for p in s.partitions]
             if info is not None else [])
    return shard_results, parts  # type: ignore[return-value]


def _partitions(shard_results: Sequence[ShardResult]) -> tuple[list[Partition], list[str]]:
    parts = [p for s in shard_results for p in s.partitions]
    return parts, [s.sha256 for s in shard_results for _ in s.partitions]


def run_dedup(runner: Runner, shard_results: Sequence[ShardResult], out: Path, ingest_fp: str,
              cfg: BuildConfig, signatures_done: bool = False) -> DedupResult:
    parts, shas = _partitions(shard_results)
    sig_dir = dedup_stage.signature_dir(out, ingest_fp, cfg.dedup)
    return dedup_stage.dedup(runner, parts, shas, sig_dir, out / WORK_DIR, cfg.dedup,
                             signatures_done)


def drop_duplicates(runner: Runner, parts: Sequence[TokenPart], dup: DedupResult,
                    tokens_dir: Path, info: TokenizerInfo):
    """Token parts without the removed documents, and what was removed per subset."""
    drops = dedup_apply.rows_by_partition(dup.removed, dup.offsets)
    kept_dir = tokens_dir.parent / f"kept-{dup.fingerprint}"
    kept_dir.mkdir(parents=True, exist_ok=True)
    results = runner.run([
        Task(f"drop {Path(p.bin).stem}", "dedup", dedup_apply.drop_documents,
             (p, d, str(kept_dir), info.dtype), kept_dir / f"{Path(p.bin).stem}.done.json",
             [p.shard_sha256, p.docs])
        for p, d in zip(parts, drops)], "drop duplicates")
    removed = reporting.sum_subsets(r["removed"] for r in results)
    return [TokenPart(**r["part"]) for r in results], removed


def write_dedup_outputs(out: Path, dup: DedupResult, summary: dict) -> dict[str, str]:
    """The removed-documents table and the human-readable dedup report; ``{name: sha256}``."""
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
    shards = discover(cfg.read.inputs)
    engine, why = resolve_engine(cfg.tokenize.tokenizer, cfg.tokenize.engine)
    info = TokenizerInfo.of(cfg.tokenize.tokenizer, engine)
    log(f"tokenize: {engine} engine ({why})", cfg.quiet)
    tok_id = tokenizer_identity(cfg.tokenize.tokenizer)
    out = Path(cfg.pack.output)
    out.mkdir(parents=True, exist_ok=True)
    settings = cfg.settings(bands_rows)
    settings["tokenize"]["tokenizer"] = tok_id
    finish_interrupted(out, cfg.quiet)
    _check_output_dir(out, settings, shards, overwrite)
    ingest_fp, ingest_dir, tokens_dir = _work_dirs(out, cfg, settings["tokenize"])
    name = cfg.dataset_name
    log(f"pileprep: {len(shards)} shards -> {dataset_prefix(out, name)}.bin/.idx "
        f"(vocab {info.vocab_size}, {info.dtype})", cfg.quiet)

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with Runner(cfg.cluster, cfg.quiet) as runner:
        sig_dir = None
        if cfg.dedup.enabled:
            charts.preload()  # the dedup report's charts are drawn after the last stage
            sig_dir = dedup_stage.signature_dir(out, ingest_fp, cfg.dedup)
            sig_dir.mkdir(parents=True, exist_ok=True)
        shard_results, parts = run_ingest_and_tokenize(runner, shards, ingest_dir, tokens_dir,
                                                       cfg, info, sig_dir)
        timings["ingest_and_tokenize"] = round(time.monotonic() - t0, 3)
        dup = None
        if cfg.dedup.enabled:
            t_dedup = time.monotonic()
            dup = run_dedup(runner, shard_results, out, ingest_fp, cfg, signatures_done=True)
            parts, dup.removed_by_subset = drop_duplicates(runner, parts, dup, tokens_dir, info)
            timings["dedup"] = round(time.monotonic() - t_dedup, 3)

    # Every output is written to a staging directory and moved in only when all are complete:
    # a failed or killed build never leaves OUT_DIR holding a mix of two builds.
    stage = atomic.fresh_stage(out)
    t1 = time.monotonic()
    log("pack: merging parts in (source, line) order", cfg.quiet)
    hashes = pack(parts, stage, name, info.dtype)
    hashes[REJECTS] = concat_text_files([s.rejects_path for s in shard_results], stage / REJECTS)
    timings["pack"] = round(time.monotonic() - t1, 3)
    if cfg.schedule is not None:
        t2 = time.monotonic()
        hashes.update(schedule_files.build_for_dataset(stage, dataset_prefix(stage, name),
                                                       cfg.schedule, cfg.quiet))
        timings["schedule"] = round(time.monotonic() - t2, 3)

    rep = reporting.make_report(shard_results, parts, timings=timings,
                                duplicates=len(dup.removed) if dup else 0)
    if dup is not None:
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
    return rep


def dedup_only(cfg: BuildConfig) -> dict:
    """Ingest and find near-duplicates only: ``duplicates.parquet``, ``dedup.json`` and the
    Markdown report. No tokens, so removal is counted in documents and text bytes."""
    cfg.dedup.enabled = True
    validate(cfg)
    shards = discover(cfg.read.inputs)
    out = Path(cfg.pack.output)
    out.mkdir(parents=True, exist_ok=True)
    finish_interrupted(out, cfg.quiet)
    ingest_fp, ingest_dir, tokens_dir = _work_dirs(out, cfg, {})
    with Runner(cfg.cluster, cfg.quiet) as runner:
        shard_results, _ = run_ingest_and_tokenize(runner, shards, ingest_dir, tokens_dir, cfg, None)
        dup = run_dedup(runner, shard_results, out, ingest_fp, cfg)
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
