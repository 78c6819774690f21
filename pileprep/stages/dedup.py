"""The dedup stage on Dask: signatures, LSH grouping, verification, components.

Signatures live in ``OUT/minhash/sig-<fingerprint>/`` and outlive the build, so a run at another
threshold (or ``pileprep dedup``) reuses them; everything after them is threshold-specific work
under the build's work directory. Every step is a :class:`~pileprep.runner.tasks.Task`, so an
interrupted run resumes.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from pileprep.core import faults
from pileprep.core.config import DedupConfig, fingerprint
from pileprep.core.files import MINHASH_DIR, WORK_DIR
from pileprep.core.progress import log
from pileprep.dedup import apply, minhash, report as dedup_report, shuffle, steps
from pileprep.dedup.result import DedupResult
from pileprep.formats.parts import Partition, ShardResult, TokenPart
from pileprep.runner.dask_runner import Runner
from pileprep.runner.tasks import Stage, Task
from pileprep.stages.pack import Appender
from pileprep.stages.report import sum_subsets

SIG_FORMAT = 1
DEDUP_FORMAT = 1
BUCKET_ROWS = 1 << 22  # band rows per shuffle bucket: ~64 MiB, sorted in ~200 MiB


def signature_dir(out: Path, ingest_fp: str, cfg: DedupConfig) -> Path:
    fp = fingerprint(SIG_FORMAT, ingest_fp, minhash.NORMALIZATION, cfg.num_perm, cfg.seed,
                     cfg.shingle_words)
    return out / MINHASH_DIR / f"sig-{fp}"


def signature_tasks(parts: Sequence[Partition], shas: Sequence[str], sig_dir: Path,
                    cfg: DedupConfig) -> list[Task]:
    return [Task(name=f"minhash {p.stem}", stage=Stage.DEDUP, fn=steps.signature_task,
                 kwargs=dict(part_path=p.path, out_path=str(sig_dir / f"{p.stem}.parquet"),
                             num_perm=cfg.num_perm, seed=cfg.seed, words=cfg.shingle_words),
                 done=sig_dir / f"{p.stem}.done.json", inputs=[sha, p.rows])
            for p, sha in zip(parts, shas)]


def _task(work: Path, name: str, fn, args: tuple) -> Task:
    """A dedup step's task: ``args`` are ``fn``'s parameters in order."""
    names = inspect.signature(fn).parameters
    return Task(name=name, stage=Stage.DEDUP, fn=fn, kwargs=dict(zip(names, args)),
                done=work / f"{name}.done.json")


def dedup(runner: Runner, parts: Sequence[Partition], shas: Sequence[str], sig_dir: Path,
          work: Path, cfg: DedupConfig, signatures_done: bool = False,
          keep_work: bool = False) -> DedupResult:
    """Find the near-duplicate documents among ``parts`` (in gid order); see :mod:`pileprep.dedup.steps`.

    ``signatures_done``: the caller already ran :func:`signature_tasks` (a build does, while it
    tokenizes). Each shuffle's files are deleted once every task reading them has finished
    (their records are what a rerun reuses), unless ``keep_work``."""
    sig_dir.mkdir(parents=True, exist_ok=True)
    rows = np.array([p.rows for p in parts], np.int64)
    offsets = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    sig_paths = [sig_dir / f"{p.stem}.parquet" for p in parts]
    if not signatures_done:
        runner.run(signature_tasks(parts, shas, sig_dir, cfg), "minhash")

    bands, band_rows = minhash.banding(cfg)
    n_buckets = max(1, math.ceil(int(rows.sum()) * bands / BUCKET_ROWS))
    fp = fingerprint(DEDUP_FORMAT, sig_dir.name, list(shas), [p.rows for p in parts],
                     cfg.threshold, bands, band_rows, cfg.verify, n_buckets)
    work = work / f"dedup-{fp}"
    work.mkdir(parents=True, exist_ok=True)
    log(f"dedup: threshold {cfg.threshold}, {bands} bands x {band_rows} rows of {cfg.num_perm} "
        f"permutations, {n_buckets} buckets, verify {'on' if cfg.verify else 'off'}", runner.quiet)

    n = len(parts)
    band_pfx = [str(work / f"band-{i:05d}") for i in range(n)]
    runner.run([_task(work, f"band-{i:05d}", steps.band_task,
                      (str(sig_paths[i]), int(offsets[i]), bands, band_rows, n_buckets, band_pfx[i]))
                for i in range(n)], "lsh bands")
    group_pfx = [str(work / f"group-{k:05d}") for k in range(n_buckets)]
    runner.run([_task(work, f"group-{k:05d}", steps.group_task, (k, band_pfx, offsets, group_pfx[k]))
                for k in range(n_buckets)], "lsh groups")
    consumed = (lambda prefixes: None) if keep_work else _delete_shuffle
    consumed(band_pfx)
    edge_paths = [str(work / f"edges-{i:05d}.npy") for i in range(n)]
    if cfg.verify:
        attach_pfx = [str(work / f"attach-{i:05d}") for i in range(n)]
        runner.run([_task(work, f"attach-{i:05d}", steps.attach_task,
                          (i, group_pfx, str(sig_paths[i]), int(offsets[i]), offsets, attach_pfx[i]))
                    for i in range(n)], "attach")
        consumed(group_pfx)
        checks = runner.run([_task(work, f"edges-{i:05d}", steps.verify_task,
                                   (i, attach_pfx, str(sig_paths[i]), int(offsets[i]),
                                    cfg.threshold, edge_paths[i]))
                             for i in range(n)], "verify")
        consumed(attach_pfx)
    else:
        checks = runner.run([_task(work, f"edges-{i:05d}", steps.unverified_task,
                                   (i, group_pfx, edge_paths[i])) for i in range(n)], "pairs")
        consumed(group_pfx)
    removed_path = work / "removed.npy"
    comp = runner.run([_task(work, "removed", steps.components,
                             (edge_paths, str(removed_path)))], "components")[0]
    stats = {"threshold": cfg.threshold, "num_perm": cfg.num_perm, "bands": bands,
             "rows": band_rows, "verify": cfg.verify, "buckets": n_buckets,
             "candidate_pairs": sum(c["candidates"] for c in checks),
             "verified_pairs": sum(c["verified"] for c in checks), **comp}
    removed = np.load(removed_path)
    if not keep_work:
        for path in edge_paths:
            Path(path).unlink(missing_ok=True)
    return DedupResult(removed, offsets, sig_paths, stats, fp, list(parts))


def _delete_shuffle(prefixes: Sequence[str]) -> None:
    for prefix in prefixes:
        shuffle.rows_path(prefix).unlink(missing_ok=True)
        shuffle.offsets_path(prefix).unlink(missing_ok=True)


def signatures_for(out: Path, ingest_fp: str, cfg: DedupConfig) -> Path:
    """The signature directory of a build's partitions, created."""
    sig_dir = signature_dir(out, ingest_fp, cfg)
    sig_dir.mkdir(parents=True, exist_ok=True)
    return sig_dir


def run(runner: Runner, shard_results: Sequence[ShardResult], out: Path, ingest_fp: str,
        cfg: DedupConfig, keep_work: bool) -> DedupResult:
    """The duplicates among every partition of ``shard_results``, whose signatures were made
    while they were read."""
    parts = [p for s in shard_results for p in s.partitions]
    shas = [s.sha256 for s in shard_results for _ in s.partitions]
    return dedup(runner, parts, shas, signatures_for(out, ingest_fp, cfg), out / WORK_DIR, cfg,
                 True, keep_work)


def drop_duplicates(appender: Appender, shard_results: Sequence[ShardResult],
                    parts: Sequence[TokenPart], dup: DedupResult, dtype: str):
    """Append the token parts without the removed documents; the parts as packed, and what was
    removed per subset."""
    positions = [(i, p.index) for i, s in enumerate(shard_results) for p in s.partitions]
    drops = dict(zip(positions, apply.rows_by_partition(dup.removed, dup.offsets)))
    removed = []

    def select(part: TokenPart, pos, tokens: bool):
        data, kept, gone = apply.drop_documents(part, drops[pos], str(appender.path.parent),
                                                dtype, tokens)
        removed.append(gone)
        faults.checkpoint("dedup")
        return data, kept

    appender.select = select
    for pos, part in zip(positions, parts):
        appender.add(pos, part)
    for i, s in enumerate(shard_results):
        appender.shard_done(i, len(s.partitions))
    return appender.parts(len(shard_results)), sum_subsets(removed)


def write_outputs(folder: Path, dup: DedupResult, summary: dict) -> dict[str, str]:
    """The removed-documents table and the human-readable dedup report; ``{name: sha256}``."""
    hashes = {apply.TABLE: apply.write_table(dup.removed, dup.offsets, dup.partitions,
                                             dup.signature_paths, folder / apply.TABLE)}
    hashes.update(dedup_report.write(folder, dup, summary))
    return hashes
