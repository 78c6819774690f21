"""The dedup stage on Dask: signatures, LSH grouping, verification, components.

Signatures live in ``OUT/minhash/sig-<fingerprint>/`` and outlive the build, so a run at another
threshold (or ``pileprep dedup``) reuses them; everything after them is threshold-specific work
under the build's work directory. Every step is a :class:`~pileprep.runner.tasks.Task` with a
completion record, so an interrupted run resumes; for a small corpus (``LOCAL_BYTES``) the LSH
steps are one task run in the driver, and dropping and appending the kept tokens is the
driver's own work, resumed from the appender's record.
"""

from __future__ import annotations

import inspect
import math
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pileprep.core import faults
from pileprep.core.config import DedupConfig, fingerprint
from pileprep.core.errors import PilePrepError
from pileprep.core.files import MINHASH_DIR, WORK_DIR
from pileprep.core.progress import Progress, log
from pileprep.dedup import apply, minhash, report as dedup_report, shuffle, steps
from pileprep.dedup.result import DedupResult, DroppedPart
from pileprep.formats.parts import Partition, ShardResult, TokenPart
from pileprep.runner.dask_runner import Runner
from pileprep.runner.tasks import Stage, Task
from pileprep.stages.pack import Appender
from pileprep.stages.report import sum_subsets

SIG_FORMAT = 2  # 2: the signatures in a .npy matrix beside the parquet file
DEDUP_FORMAT = 1
BUCKET_ROWS = 1 << 22  # band rows per shuffle bucket: ~64 MiB, sorted in ~200 MiB
WRITE_AHEAD = 2  # kept-token writes queued per worker past the hashed prefix (drop_duplicates)
# Below this many bytes of token parts (of signatures) the driver drops and appends them
# itself (runs the LSH steps on all documents at once, steps.in_memory): rounds of tasks over
# partitions cost more than such work (60 MB of real text: dropping and writing 0.61 s on the
# workers; the five LSH rounds 0.5 s there, 0.1 s at once).
LOCAL_BYTES = 64 << 20
APPEND_SYNC_BYTES = LOCAL_BYTES // 4  # kept tokens the driver appends between two records


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
    fp = fingerprint(DEDUP_FORMAT, shuffle.FORMAT, sig_dir.name, list(shas),
                     [p.rows for p in parts], cfg.threshold, bands, band_rows, cfg.verify, n_buckets)
    work = work / f"dedup-{fp}"
    work.mkdir(parents=True, exist_ok=True)
    log(f"dedup: threshold {cfg.threshold}, {bands} bands x {band_rows} rows of {cfg.num_perm} "
        f"permutations, {n_buckets} buckets, verify {'on' if cfg.verify else 'off'}", runner.quiet)

    removed_path = work / "removed.npy"
    if _lsh_here(parts, cfg):
        counts = runner.run([_task(work, "lsh", steps.in_memory,
                                   ([str(p) for p in sig_paths], bands, band_rows, cfg.threshold,
                                    cfg.verify, str(removed_path)))], "lsh", here=True)[0]
    else:
        counts = _lsh_tasks(runner, work, sig_paths, offsets, (bands, band_rows), n_buckets, cfg,
                            removed_path, keep_work)
    stats = {"threshold": cfg.threshold, "num_perm": cfg.num_perm, "bands": bands,
             "rows": band_rows, "verify": cfg.verify, "buckets": n_buckets,
             "candidate_pairs": counts.pop("candidates"), "verified_pairs": counts.pop("verified"),
             **counts}
    return DedupResult(np.load(removed_path), offsets, sig_paths, stats, fp, list(parts))


def _lsh_here(parts: Sequence[Partition], cfg: DedupConfig) -> bool:
    """Whether the LSH steps run at once in the driver (signatures under ``LOCAL_BYTES``)."""
    return sum(p.rows for p in parts) * cfg.num_perm * 4 < LOCAL_BYTES


def _drop_here(parts: Sequence[TokenPart], dtype: str) -> bool:
    """Whether the driver drops and appends the kept tokens itself (under ``LOCAL_BYTES``)."""
    return sum(p.tokens for p in parts) * np.dtype(dtype).itemsize < LOCAL_BYTES


def needs_workers(shard_results: Sequence[ShardResult], parts: Sequence[TokenPart],
                  cfg: DedupConfig, dtype: str) -> bool:
    """Whether any dedup step after the signatures runs on the workers: when none does, a
    build lets them go as soon as the shards are read, and their shutdown (~0.4 s) overlaps
    the driver's work instead of following it."""
    return not (_lsh_here([p for s in shard_results for p in s.partitions], cfg)
                and _drop_here(parts, dtype))


def preload() -> None:
    """Import scipy's connected components (0.15-0.27 s of CPU) in a background thread while
    the driver only waits for workers: the LSH steps run at once in the driver use it (for a
    corpus too large for that, the import is not needed, and a small part of its build)."""
    threading.Thread(target=_import_components, name="pileprep-preload-scipy",
                     daemon=True).start()


def _import_components() -> None:
    import scipy.sparse.csgraph  # noqa: F401


def _lsh_tasks(runner: Runner, work: Path, sig_paths: Sequence[Path], offsets: np.ndarray,
               banding: tuple[int, int], n_buckets: int, cfg: DedupConfig, removed_path: Path,
               keep_work: bool) -> dict:
    """The LSH steps as rounds of tasks over partitions and buckets (:mod:`pileprep.dedup.steps`);
    the candidate and verified pair counts and the components' counts."""
    n = len(sig_paths)
    bands, band_rows = banding
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
    comp = runner.run([_task(work, "removed", steps.components, (edge_paths, str(removed_path)))],
                      "components")[0]
    if not keep_work:
        for path in edge_paths:
            Path(path).unlink(missing_ok=True)
    return {"candidates": sum(c["candidates"] for c in checks),
            "verified": sum(c["verified"] for c in checks), **comp}


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


def drop_duplicates(runner: Runner, appender: Appender, shard_results: Sequence[ShardResult],
                    parts: Sequence[TokenPart], dup: DedupResult, dtype: str,
                    dropped_hook: Callable[[list[TokenPart], dict], None] | None = None):
    """Write the token parts without the removed documents into the dataset's ``.bin``; the
    parts as packed, and what was removed per subset.

    Small parts (``LOCAL_BYTES``) the driver drops and appends itself, part by part in one
    pass, as a plain build appends (:func:`_append_kept`). Else first each part's provenance
    less its removed documents, as tasks (which gives its kept size, so its offset in the
    ``.bin``), then its kept tokens, copied by tasks into their own ranges of the preallocated
    file, all parts at once (:func:`_write_in_place`). Either way the appender's record says
    how far the file is written, and a rerun resumes after it. ``dropped_hook(parts as packed,
    removed per subset)`` is called once both are known (before the range writes)."""
    drops = [d.tolist() for d in apply.rows_by_partition(dup.removed, dup.offsets)]
    positions = [(i, p.index) for i, s in enumerate(shard_results) for p in s.partitions]
    counts = {i: len(s.partitions) for i, s in enumerate(shard_results)}

    def report(dropped: list[DroppedPart]) -> dict:
        removed = sum_subsets([d.removed for d in dropped])
        if dropped_hook is not None:
            dropped_hook([d.packed for d in dropped], removed)
        return removed

    if _drop_here(parts, dtype):
        removed = report(_append_kept(runner, appender, positions, parts, drops, counts, dtype))
    else:
        workdir = appender.path.parent
        stems = [Path(part.prov).name.removesuffix(".prov.parquet") for part in parts]
        dropped = runner.run([
            Task(name=f"drop {stem}", stage=Stage.DEDUP, fn=apply.drop_task,
                 kwargs=dict(part=part, drop=drop, out_dir=str(workdir), dtype=dtype),
                 done=workdir / f"{stem}.drop.done.json", result_type=DroppedPart, order=i,
                 inputs=[dup.fingerprint, part.shard_sha256, part.docs, part.tokens])
            for i, (stem, part, drop) in enumerate(zip(stems, parts, drops))], "drop duplicates")
        removed = report(dropped)
        _write_in_place(runner, appender, shard_results,
                        _KeptParts(positions, parts, drops, dropped, stems, dtype))
    for i, s in enumerate(shard_results):
        appender.shard_done(i, len(s.partitions))
    return appender.parts(len(shard_results)), removed


@dataclass(frozen=True)
class _KeptParts:
    """The token parts (with their positions), what to drop of each (rows) and each as
    dropped (``DroppedPart``)."""

    positions: list[tuple[int, int]]
    parts: Sequence[TokenPart]
    drops: list[list[int]]
    dropped: list[DroppedPart]
    stems: list[str]
    dtype: str


def _append_kept(runner: Runner, appender: Appender, positions: list[tuple[int, int]],
                 parts: Sequence[TokenPart], drops: list[list[int]], counts: dict[int, int],
                 dtype: str) -> list[DroppedPart]:
    """The driver drops each part's removed documents and appends its kept tokens, in order,
    in one pass (small parts: no task, record or sync per part); each part as dropped."""
    index = {pos: i for i, pos in enumerate(positions)}
    workdir = str(appender.path.parent)
    itemsize = np.dtype(dtype).itemsize
    dropped: list[DroppedPart] = [None] * len(parts)  # type: ignore[list-item]
    bar = Progress("drop and append", sum(p.tokens for p in parts) * itemsize, len(parts),
                   quiet=runner.quiet)

    def select(part: TokenPart, pos, tokens: bool):
        i = index[pos]
        with runner.inline(f"drop {Path(part.bin).stem}", Stage.DEDUP):
            # Not synced: every run writes each part's kept provenance again (also for a part
            # an earlier run appended), before the pack reads it.
            kept, sizes = apply.drop_part(part, drops[i], workdir, dtype, sync=False)
            faults.checkpoint(Stage.DEDUP)
            data = b"".join(apply.kept_blocks(part.bin, sizes, drops[i], dtype)) if tokens else None
        dropped[i] = kept
        bar.update(items=1, nbytes=part.tokens * itemsize, docs=part.docs)
        return data, kept.packed

    # Synced (and the parts appended deleted) every APPEND_SYNC_BYTES: scratch holds at most
    # that much twice, not every part and the whole kept file (1.7x the outputs at 60 MB).
    appender.extend(list(zip(positions, parts)), counts, select, sync_bytes=APPEND_SYNC_BYTES)
    bar.close()
    return dropped


def _write_in_place(runner: Runner, appender: Appender, shard_results: Sequence[ShardResult],
                    kept: _KeptParts) -> None:
    """Tasks copy each part's kept tokens into its own range of the preallocated ``.bin``;
    the driver follows them in order, hashing each range once it and every range before it
    are written, and records the written prefix as the appender does (a rerun resumes after
    it and deletes no part it has not recorded)."""
    positions, parts, stems, dtype = kept.positions, kept.parts, kept.stems, kept.dtype
    sizes = [d.nbytes for d in kept.dropped]
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).tolist()
    appender.preallocate(offsets[-1])
    workdir = appender.path.parent
    # Write records hold for this run only: a killed run's writes past the recorded prefix
    # were cut off when the appender resumed.
    writes = workdir / "writes"
    shutil.rmtree(writes, ignore_errors=True)
    writes.mkdir()
    todo = [i for i, pos in enumerate(positions) if not appender.claims(pos) and sizes[i]]
    if todo and offsets[todo[0]] != appender.nbytes:  # a driver bug
        raise PilePrepError(f"pack: {appender.path} holds {appender.nbytes} bytes, the parts "
                            f"before {stems[todo[0]]} {offsets[todo[0]]}")
    tasks = [Task(name=f"write {stems[i]}", stage=Stage.DEDUP, fn=apply.write_kept_task,
                  kwargs=dict(bin_path=parts[i].bin, prov_path=parts[i].prov, drop=kept.drops[i],
                              dtype=dtype, target=str(appender.path), offset=offsets[i],
                              nbytes=sizes[i]),
                  done=writes / f"{stems[i]}.done.json", order=i) for i in todo]
    written = set(range(len(parts))) - set(todo)  # nothing to write: recorded, or empty
    index = {t.name: i for t, i in zip(tasks, todo)}
    nxt = 0

    def take(final: bool = False) -> None:
        nonlocal nxt
        ready = []
        while nxt < len(parts) and nxt in written:
            ready.append((positions[nxt], parts[nxt], kept.dropped[nxt].packed, sizes[nxt]))
            nxt += 1
        if ready or final:
            appender.take_written(ready, final)

    take()
    # Writers run at most WRITE_AHEAD parts per worker past the hashed prefix: a part's .bin is
    # deleted only once the prefix passes it, so scratch holds the parts, plus that many
    # written twice (not the whole kept file, when the writers outrun the driver).
    ahead = WRITE_AHEAD * max(1, runner.workers)
    queued = min(ahead, len(tasks))

    def more(task, result) -> list[Task]:
        nonlocal queued
        start = queued
        while queued < len(tasks) and index[tasks[queued].name] < nxt + ahead:
            queued += 1
        return tasks[start:queued]

    bar = Progress("write kept", offsets[-1] - appender.nbytes, len(tasks), quiet=runner.quiet)
    for task, result in runner.run_graph(tasks[:queued], more):
        written.add(index[task.name])
        bar.update(items=1, nbytes=result["bytes"])
        take()
    bar.close()
    take(final=True)
    if nxt != len(parts):  # every write finished, yet the prefix stopped short: a driver bug
        raise PilePrepError(f"pack: parts after {stems[nxt - 1] if nxt else 'the start'} not written")
    shutil.rmtree(writes, ignore_errors=True)


def write_outputs(folder: Path, dup: DedupResult, summary: dict) -> dict[str, str]:
    """The removed-documents table and the human-readable dedup report; ``{name: sha256}``."""
    hashes = {apply.TABLE: apply.write_table(dup.removed, dup.offsets, dup.partitions,
                                             dup.signature_paths, folder / apply.TABLE)}
    hashes.update(dedup_report.write(folder, dup, summary))
    return hashes
