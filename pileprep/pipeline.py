"""Run a build: ingest -> tokenize -> pack, as Dask stages, with resume and a final report.

Stage outputs live under ``OUT_DIR/.pileprep-work/<stage>-<fingerprint>/``, where the
fingerprint hashes every setting that changes that stage's output. Each task writes its outputs
atomically and then a ``.done.json`` record, from the worker itself, so a build killed at any
point resumes from the finished tasks: a changed setting gives a new fingerprint and redoes that
stage and the ones after it, never the ones before.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

from . import atomic, charts, faults, neox, report as reporting, schedule
from .cluster import Runner
from .config import BuildConfig, ConfigError, fingerprint
from .dedup import apply as dedup_apply, report as dedup_report, run as dedup_run
from .dedup import stages as dedup_stages
from .ingest import Partition, ShardResult, ingest_shard
from .pack import concat_text_files, dataset_prefix, pack
from .progress import Progress, log
from .provenance import sha256_file
from .sources import Shard, discover
from .tokenize import TokenizerInfo, TokenPart, resolve_engine, tokenize_partition

WORK_DIR = ".pileprep-work"
# Bump when the reader's accept/reject rules or partition layout change: old work is then stale.
INGEST_FORMAT = 1
TOKENS_FORMAT = 1


def tokenizer_identity(spec: str) -> str:
    """The content hash of a tokenizer file, or the hub id: what the tokens depend on."""
    return sha256_file(spec) if os.path.exists(spec) else f"hub:{spec}"


def _ingest_task(shard: Shard, index: int, workdir: str, cfg, identity: dict) -> ShardResult:
    result = ingest_shard(shard, index, workdir, cfg)
    faults.checkpoint("ingest")
    atomic.write_json(Path(workdir) / f"{shard.file_stem}.done.json",
                      {"input": identity, "result": dataclasses.asdict(result)})
    return result


def _tokenize_task(part: Partition, workdir: str, cfg, info, shard_sha: str) -> TokenPart:
    result = tokenize_partition(part, workdir, cfg, info, shard_sha)
    faults.checkpoint("tokenize")
    atomic.write_json(Path(workdir) / f"{part.stem}.done.json", dataclasses.asdict(result))
    return result


def _reusable_shard(done: Path, stat: dict) -> ShardResult | None:
    if not done.exists():
        return None
    record = atomic.read_json(done)
    if record.get("input") != stat:
        return None
    result = ShardResult.from_json(record["result"])
    if not all(Path(p.path).exists() for p in result.partitions):
        return None
    return result


def _reusable_part(done: Path, shard_sha: str) -> TokenPart | None:
    if not done.exists():
        return None
    part = TokenPart(**atomic.read_json(done))
    if part.shard_sha256 != shard_sha or not (Path(part.bin).exists() and Path(part.prov).exists()):
        return None
    return part


def _plan_ingest(shards: Sequence[Shard], workdir: Path, cfg: BuildConfig
                 ) -> tuple[list[ShardResult | None], list[tuple]]:
    """Reused shard results (None where the shard must be read) and the ingest task arguments."""
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[ShardResult | None] = [None] * len(shards)
    todo = []
    for i, shard in enumerate(shards):
        identity = shard.identity()
        results[i] = _reusable_shard(workdir / f"{shard.file_stem}.done.json", identity)
        if results[i] is None:
            todo.append((shard, i, str(workdir), cfg.read, identity))
    if len(todo) < len(shards):
        log(f"ingest: reusing {len(shards) - len(todo)} of {len(shards)} shards from {workdir}", cfg.quiet)
    return results, todo


def run_ingest(runner: Runner, shards: Sequence[Shard], workdir: Path, cfg: BuildConfig) -> list[ShardResult]:
    results, todo = _plan_ingest(shards, workdir, cfg)
    bar = Progress("ingest", sum(t[0].size for t in todo), len(todo), quiet=cfg.quiet)
    for j, result in runner.map(_ingest_task, todo):
        results[todo[j][1]] = result
        bar.update(nbytes=result.size, items=1, docs=result.accepted)
    bar.close()
    return results  # type: ignore[return-value]


def run_ingest_and_tokenize(runner: Runner, shards: Sequence[Shard], ingest_dir: Path,
                            tokens_dir: Path, cfg: BuildConfig, info: TokenizerInfo,
                            sig_dir: Path | None = None
                            ) -> tuple[list[ShardResult], list[TokenPart]]:
    """Stages 1 and 3 overlapped: a shard's partitions are tokenized as soon as it is read.

    With ``sig_dir`` (a ``--dedup`` build), their MinHash signatures are computed in the same
    graph, so the dedup stage later finds them done and no core idles between the stages.
    """
    tokens_dir.mkdir(parents=True, exist_ok=True)
    shard_results, todo = _plan_ingest(shards, ingest_dir, cfg)
    tokens: dict[tuple[int, int], TokenPart] = {}
    ingest_bar = Progress("ingest", sum(t[0].size for t in todo), len(todo), quiet=cfg.quiet)
    token_bar = Progress("tokenize", 0, 0, quiet=cfg.quiet)
    sig_bar = Progress("minhash", 0, 0, quiet=cfg.quiet or sig_dir is None)

    def tokenize_jobs(i: int, shard: ShardResult) -> list[tuple]:
        jobs = []
        for k, part in enumerate(shard.partitions):
            reused = _reusable_part(tokens_dir / f"{part.stem}.done.json", shard.sha256)
            if reused is not None:
                tokens[(i, k)] = reused
            else:
                jobs.append((("tokenize", i, k), _tokenize_task,
                             (part, str(tokens_dir), cfg.tokenize, info, shard.sha256)))
                token_bar.total_items += 1
                token_bar.total_bytes += part.text_bytes
        if sig_dir is not None:
            tasks = dedup_run.signature_tasks(shard.partitions, [shard.sha256] * len(shard.partitions),
                                              sig_dir, cfg.dedup)
            for k, task in enumerate(tasks):
                if not dedup_run.is_done(task):
                    jobs.append((("minhash", i, k), *dedup_run.call(task, dedup_stages.signature_task)))
                    sig_bar.total_items += 1
                    sig_bar.total_bytes += shard.partitions[k].text_bytes
        return jobs

    initial = [(("ingest", args[1]), _ingest_task, args) for args in todo]
    for i, shard in enumerate(shard_results):
        if shard is not None:
            initial.extend(tokenize_jobs(i, shard))

    def expand(job: tuple, result) -> list[tuple]:
        if job[0][0] != "ingest":
            return []
        shard_results[job[0][1]] = result
        ingest_bar.update(nbytes=result.size, items=1, docs=result.accepted)
        return tokenize_jobs(job[0][1], result)

    for tag, result in runner.run_graph(initial, expand):
        if tag[0] == "tokenize":
            tokens[tag[1:]] = result
            token_bar.update(nbytes=result.text_bytes, items=1, docs=result.docs)
        elif tag[0] == "minhash":
            sig_bar.update(nbytes=shard_results[tag[1]].partitions[tag[2]].text_bytes, items=1)
    if ingest_bar.total_items:
        ingest_bar.close()
    token_bar.close()
    n_parts = sum(len(s.partitions) for s in shard_results)
    bars = [token_bar] + ([sig_bar] if sig_dir is not None else [])
    if sig_bar.total_items:
        sig_bar.close()
    for bar in bars:
        if bar.total_items < n_parts:
            log(f"{bar.stage}: reusing {n_parts - bar.total_items} of {n_parts} partitions", cfg.quiet)
    parts = [tokens[(i, k)] for i, s in enumerate(shard_results) for k in range(len(s.partitions))]
    return shard_results, parts  # type: ignore[return-value]


def _partitions(shard_results: Sequence[ShardResult]) -> tuple[list[Partition], list[str]]:
    parts = [p for s in shard_results for p in s.partitions]
    return parts, [s.sha256 for s in shard_results for _ in s.partitions]


def run_dedup(runner: Runner, shard_results: Sequence[ShardResult], out: Path, ingest_fp: str,
              cfg: BuildConfig, signatures_done: bool = False) -> dedup_run.DedupResult:
    parts, shas = _partitions(shard_results)
    sig_dir = dedup_run.signature_dir(out, ingest_fp, cfg.dedup)
    return dedup_run.dedup(runner, parts, shas, sig_dir, out / WORK_DIR, cfg.dedup, cfg.quiet,
                           signatures_done)


def drop_duplicates(runner: Runner, parts: Sequence[TokenPart], dup: dedup_run.DedupResult,
                    tokens_dir: Path, info: TokenizerInfo, cfg: BuildConfig):
    """Token parts without the removed documents, and what was removed per subset."""
    drops = dedup_apply.rows_by_partition(dup.removed, dup.offsets)
    kept_dir = tokens_dir.parent / f"kept-{dup.fingerprint}"
    kept_dir.mkdir(parents=True, exist_ok=True)
    results = dedup_run.run_tasks(runner, "drop duplicates", dedup_apply.drop_documents, [
        dedup_run.Task(kept_dir / f"{Path(p.bin).stem}.done.json", (p, d, str(kept_dir), info.dtype),
                       [p.shard_sha256, p.docs])
        for p, d in zip(parts, drops)], cfg.quiet)
    removed = reporting.sum_subsets(r["removed"] for r in results)
    return [TokenPart(**r["part"]) for r in results], removed


def write_dedup_outputs(out: Path, dup: dedup_run.DedupResult, summary: dict) -> dict[str, str]:
    """The removed-documents table and the human-readable dedup report; ``{name: sha256}``."""
    hashes = {dedup_apply.TABLE: dedup_apply.write_table(
        dup.removed, dup.offsets, dup.partitions, dup.signature_paths, out / dedup_apply.TABLE)}
    hashes.update(dedup_report.write(out, dup, summary))
    return hashes


def _fresh_stage(out: Path) -> Path:
    stage = out / atomic.STAGING
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def _finish_interrupted_commit(out: Path, quiet: bool) -> None:
    if atomic.finish_commit(out / atomic.STAGING, out):
        log(f"finished moving the outputs of an interrupted build into {out}", quiet)


def _check_output_dir(out: Path, settings: dict, shards: Sequence[Shard], overwrite: bool) -> None:
    """Refuse to overwrite a finished build of other inputs or settings, unless asked to."""
    manifest = out / reporting.MANIFEST
    if not manifest.exists() or overwrite:
        return
    old = atomic.read_json(manifest)
    # A streamed source's size is known only after reading it: compare its name only.
    streamed = {s.name for s in shards if s.kind == "hf"}
    old_inputs = [(i["name"], None if i["name"] in streamed else i["size"])
                  for i in old.get("inputs", [])]
    new_inputs = [(s.name, None if s.kind == "hf" else s.size) for s in shards]
    if old.get("settings") != settings or old_inputs != new_inputs:
        raise ConfigError(f"output directory {out} holds a different build (other inputs or "
                          "settings); choose another --output or pass --overwrite")


def build(cfg: BuildConfig, overwrite: bool = False) -> dict:
    """Build the dataset described by ``cfg``; return the report (also written to disk)."""
    cfg.validate()
    shards = discover(cfg.read.inputs)
    engine, why = resolve_engine(cfg.tokenize.tokenizer, cfg.tokenize.engine)
    info = TokenizerInfo.of(cfg.tokenize.tokenizer, engine)
    log(f"tokenize: {engine} engine ({why})", cfg.quiet)
    tok_id = tokenizer_identity(cfg.tokenize.tokenizer)
    out = Path(cfg.pack.output)
    out.mkdir(parents=True, exist_ok=True)
    settings = cfg.settings()
    settings["tokenize"]["tokenizer"] = tok_id
    _finish_interrupted_commit(out, cfg.quiet)
    _check_output_dir(out, settings, shards, overwrite)
    ingest_fp = fingerprint(INGEST_FORMAT, cfg.read.stage_settings())
    ingest_dir = out / WORK_DIR / f"ingest-{ingest_fp}"
    tokens_dir = out / WORK_DIR / f"tokens-{fingerprint(TOKENS_FORMAT, ingest_fp, settings['tokenize'])}"
    name = cfg.dataset_name
    log(f"pileprep: {len(shards)} shards -> {dataset_prefix(out, name)}.bin/.idx "
        f"(vocab {info.vocab_size}, {info.dtype})", cfg.quiet)

    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with Runner(cfg.cluster, cfg.quiet) as runner:
        sig_dir = None
        if cfg.dedup.enabled:
            charts.preload()  # the dedup report's charts are drawn after the last stage
            sig_dir = dedup_run.signature_dir(out, ingest_fp, cfg.dedup)
            sig_dir.mkdir(parents=True, exist_ok=True)
        shard_results, parts = run_ingest_and_tokenize(runner, shards, ingest_dir, tokens_dir,
                                                       cfg, info, sig_dir)
        timings["ingest_and_tokenize"] = round(time.monotonic() - t0, 3)
        dup = None
        if cfg.dedup.enabled:
            t_dedup = time.monotonic()
            dup = run_dedup(runner, shard_results, out, ingest_fp, cfg, signatures_done=True)
            parts, dup.removed_by_subset = drop_duplicates(runner, parts, dup, tokens_dir, info, cfg)
            timings["dedup"] = round(time.monotonic() - t_dedup, 3)

    # Every output is written to a staging directory and moved in only when all are complete:
    # a failed or killed build never leaves OUT_DIR holding a mix of two builds.
    stage = _fresh_stage(out)
    t1 = time.monotonic()
    log("pack: merging parts in (source, line) order", cfg.quiet)
    hashes = pack(parts, stage, name, info.dtype)
    hashes[reporting.REJECTS] = concat_text_files([s.rejects_path for s in shard_results],
                                                  stage / reporting.REJECTS)
    timings["pack"] = round(time.monotonic() - t1, 3)
    if cfg.schedule is not None:
        t2 = time.monotonic()
        hashes.update(schedule.build_for_dataset(stage, dataset_prefix(stage, name),
                                                 cfg.schedule, cfg.quiet))
        timings["schedule"] = round(time.monotonic() - t2, 3)

    rep = reporting.make_report(shard_results, parts, timings=timings,
                                duplicates=len(dup.removed) if dup else 0)
    if dup is not None:
        rep["dedup"] = dedup_report.summary(dup, rep["subsets"])
        hashes.update(write_dedup_outputs(stage, dup, rep["dedup"]))
    outputs = {name: {"bytes": (stage / name).stat().st_size, "sha256": sha}
               for name, sha in sorted(hashes.items())}
    manifest = reporting.make_manifest(shard_results, settings, info,
                                       tok_id.removeprefix("hub:"), outputs)
    atomic.write_json(stage / reporting.REPORT, rep)
    atomic.write_json(stage / reporting.MANIFEST, manifest)
    atomic.commit(stage, out)
    if cfg.schedule is not None:
        neox.write(out, dataset_prefix(out, name), cfg.schedule, cfg.tokenize.tokenizer)
    if not cfg.keep_work:
        shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    log(f"done: {rep['kept']:,} documents, {rep['tokens']:,} tokens; "
        f"{rep['lines_read']:,} lines read, {rep['duplicates']:,} duplicates removed, "
        f"{rep['rejected_total']:,} rejected "
        f"({', '.join(f'{k} {v}' for k, v in rep['rejected'].items()) or 'none'})", cfg.quiet)
    return rep


def dedup_only(cfg: BuildConfig) -> dict:
    """Ingest and find near-duplicates only: ``duplicates.parquet``, ``dedup.json`` and the
    Markdown report. No tokens, so removal is counted in documents and text bytes."""
    cfg.dedup.enabled = True
    cfg.validate()
    shards = discover(cfg.read.inputs)
    out = Path(cfg.pack.output)
    out.mkdir(parents=True, exist_ok=True)
    _finish_interrupted_commit(out, cfg.quiet)
    ingest_fp = fingerprint(INGEST_FORMAT, cfg.read.stage_settings())
    with Runner(cfg.cluster, cfg.quiet) as runner:
        shard_results = run_ingest(runner, shards, out / WORK_DIR / f"ingest-{ingest_fp}", cfg)
        dup = run_dedup(runner, shard_results, out, ingest_fp, cfg)
    kept = dedup_apply.subset_counts(dup.signature_paths, dup.removed, dup.offsets)
    dup.removed_by_subset = {n: [v["removed"], 0, 0] for n, v in kept.items()}
    summary = dedup_report.summary(dup, {n: {"documents": v["kept"]} for n, v in kept.items()})
    summary["tokens_counted"] = False
    summary["lines_read"] = sum(s.lines_read for s in shard_results)
    summary["rejected_total"] = sum(sum(s.rejected.values()) for s in shard_results)
    stage = _fresh_stage(out)
    write_dedup_outputs(stage, dup, summary)
    atomic.write_json(stage / "dedup.json", summary)
    atomic.commit(stage, out)
    if not cfg.keep_work:
        shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    return summary
