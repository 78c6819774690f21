"""Drive the dedup stage on Dask: signatures, LSH grouping, verification, components.

Signatures live in ``OUT/minhash/sig-<fingerprint>/`` and outlive the build, so a run at another
threshold (or ``pileprep dedup``) reuses them; everything after them is threshold-specific work
under the build's work directory. Every task records completion, so an interrupted run resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import atomic, faults
from ..cluster import Runner
from ..config import DedupConfig, fingerprint
from ..ingest import Partition
from ..progress import Progress, log
from . import minhash, stages

SIG_FORMAT = 1
DEDUP_FORMAT = 1
BUCKET_ROWS = 1 << 22  # band rows per shuffle bucket: ~64 MiB, sorted in ~200 MiB


@dataclass
class Task:
    done: Path  # completion record, written by the worker after the task's outputs
    args: tuple
    key: Any = None  # what the outputs were made from; a record with another key is redone


@dataclass
class DedupResult:
    removed: np.ndarray  # stages.REMOVED_ROW, sorted by gid
    offsets: np.ndarray  # first gid of each partition
    signature_paths: list[Path]
    stats: dict
    fingerprint: str
    partitions: list[Partition] = field(default_factory=list)
    removed_by_subset: dict[str, list[int]] = field(default_factory=dict)  # docs, tokens, bytes


def signature_dir(out: Path, ingest_fp: str, cfg: DedupConfig) -> Path:
    fp = fingerprint(SIG_FORMAT, ingest_fp, minhash.NORMALIZATION, cfg.num_perm, cfg.seed,
                     cfg.shingle_words)
    return out / "minhash" / f"sig-{fp}"


def _with_done(done: str, key: Any, fn: Callable, *args) -> Any:
    result = fn(*args)
    faults.checkpoint("dedup")
    atomic.write_json(done, {"key": key, "result": result})
    return result


def done_record(task: Task) -> dict | None:
    """The task's completion record, if it finished with the same key."""
    rec = atomic.read_json(task.done) if task.done.exists() else None
    return rec if rec is not None and rec.get("key") == task.key else None


def is_done(task: Task) -> bool:
    return done_record(task) is not None


def call(task: Task, fn: Callable) -> tuple:
    """``(function, args)`` that run ``fn`` for ``task`` and write its done record, for callers
    that schedule the task themselves (the build overlaps signatures with tokenization)."""
    return _with_done, (str(task.done), task.key, fn, *task.args)


def signature_tasks(parts: Sequence[Partition], shas: Sequence[str], sig_dir: Path,
                    cfg: DedupConfig) -> list[Task]:
    return [Task(sig_dir / f"{p.stem}.done.json",
                 (p.path, str(sig_dir / f"{p.stem}.parquet"), cfg.num_perm, cfg.seed,
                  cfg.shingle_words), [sha, p.rows])
            for p, sha in zip(parts, shas)]


def run_tasks(runner: Runner, label: str, fn: Callable, tasks: Sequence[Task], quiet: bool) -> list:
    """Run ``fn(*task.args)`` for each task without a matching done record; return all results."""
    results: list = [None] * len(tasks)
    todo = []
    for i, task in enumerate(tasks):
        rec = done_record(task)
        if rec is not None:
            results[i] = rec["result"]
        else:
            todo.append(i)
    if len(todo) < len(tasks):
        log(f"{label}: reusing {len(tasks) - len(todo)} of {len(tasks)} tasks", quiet)
    if todo:
        bar = Progress(label, 0, len(todo), quiet=quiet)
        calls = [(str(tasks[i].done), tasks[i].key, fn, *tasks[i].args) for i in todo]
        for j, result in runner.map(_with_done, calls):
            results[todo[j]] = result
            bar.update(items=1)
        bar.close()
    return results


def dedup(runner: Runner, parts: Sequence[Partition], shas: Sequence[str], sig_dir: Path,
          work: Path, cfg: DedupConfig, quiet: bool = False,
          signatures_done: bool = False) -> DedupResult:
    """Find the near-duplicate documents among ``parts`` (in gid order); see :mod:`.stages`.

    ``signatures_done``: the caller already ran :func:`signature_tasks` (a build does, while it
    tokenizes)."""
    sig_dir.mkdir(parents=True, exist_ok=True)
    rows = np.array([p.rows for p in parts], np.int64)
    offsets = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    sig_paths = [sig_dir / f"{p.stem}.parquet" for p in parts]
    if not signatures_done:
        run_tasks(runner, "minhash", stages.signature_task,
                  signature_tasks(parts, shas, sig_dir, cfg), quiet)

    bands, band_rows = cfg.lsh_params()
    n_buckets = max(1, math.ceil(int(rows.sum()) * bands / BUCKET_ROWS))
    fp = fingerprint(DEDUP_FORMAT, sig_dir.name, list(shas), [p.rows for p in parts],
                     cfg.threshold, bands, band_rows, cfg.verify, n_buckets)
    work = work / f"dedup-{fp}"
    work.mkdir(parents=True, exist_ok=True)
    log(f"dedup: threshold {cfg.threshold}, {bands} bands x {band_rows} rows of {cfg.num_perm} "
        f"permutations, {n_buckets} buckets, verify {'on' if cfg.verify else 'off'}", quiet)

    band_pfx = [str(work / f"band-{i:05d}") for i in range(len(parts))]
    run_tasks(runner, "lsh bands", stages.band_task, [
        Task(work / f"band-{i:05d}.done.json",
             (str(sig_paths[i]), int(offsets[i]), bands, band_rows, n_buckets, band_pfx[i]))
        for i in range(len(parts))], quiet)
    group_pfx = [str(work / f"group-{k:05d}") for k in range(n_buckets)]
    run_tasks(runner, "lsh groups", stages.group_task, [
        Task(work / f"group-{k:05d}.done.json", (k, band_pfx, offsets, group_pfx[k]))
        for k in range(n_buckets)], quiet)
    edge_paths = [str(work / f"edges-{i:05d}.npy") for i in range(len(parts))]
    if cfg.verify:
        attach_pfx = [str(work / f"attach-{i:05d}") for i in range(len(parts))]
        run_tasks(runner, "attach", stages.attach_task, [
            Task(work / f"attach-{i:05d}.done.json",
                 (i, group_pfx, str(sig_paths[i]), int(offsets[i]), offsets, attach_pfx[i]))
            for i in range(len(parts))], quiet)
        checks = run_tasks(runner, "verify", stages.verify_task, [
            Task(work / f"edges-{i:05d}.done.json",
                 (i, attach_pfx, str(sig_paths[i]), int(offsets[i]), cfg.threshold, edge_paths[i]))
            for i in range(len(parts))], quiet)
    else:
        checks = run_tasks(runner, "pairs", stages.unverified_task, [
            Task(work / f"edges-{i:05d}.done.json", (i, group_pfx, edge_paths[i]))
            for i in range(len(parts))], quiet)
    removed_path = work / "removed.npy"
    comp = run_tasks(runner, "components", stages.components, [
        Task(work / "removed.done.json", (edge_paths, str(removed_path)))], quiet)[0]
    stats = {"threshold": cfg.threshold, "num_perm": cfg.num_perm, "bands": bands,
             "rows": band_rows, "verify": cfg.verify, "buckets": n_buckets,
             "candidate_pairs": sum(c["candidates"] for c in checks),
             "verified_pairs": sum(c["verified"] for c in checks), **comp}
    return DedupResult(np.load(removed_path), offsets, sig_paths, stats, fp, list(parts))
