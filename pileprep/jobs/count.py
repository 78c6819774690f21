"""``pileprep count``: occurrences of token sequences in the corpus and in the training samples of
a step range, each query counted the cheaper of two exact ways.

- **index** (:class:`training.ngram.Counter`): the query's hits in the suffix-array index, each
  mapped to the training samples holding it. Costs per hit: right for rare terms.
- **stream** (:func:`training.ngram.scan_range`): one read of every trained sample of the range
  counts all frequent queries at once, as Dask tasks over sample ranges (each writes its counts
  atomically with a completion record, so an interrupted pass resumes). Costs per trained token.

``auto`` sends a query to the pass when its hits would cost more (``training.ngram.choose_stream``).
Both give the same numbers (tested on every query). The corpus column comes from the index (or,
for a preshuffled dataset whose every item the pass read, from the pass).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from pileprep.core import atomic, faults
from pileprep.core.config import ClusterConfig
from pileprep.core.errors import ConfigError
from pileprep.core.files import COUNT_WORK, NGRAM_DIR
from pileprep.core.outdir import LOCK_FILE, locked
from pileprep.core.progress import Progress
from pileprep.formats.parts import FileResult
from pileprep.formats.suffix import SuffixIndex, data_identity
from pileprep.runner.dask_runner import Runner
from pileprep.runner.tasks import Stage, Task
from pileprep.training import ngram
from pileprep.training.order import TrainingOrder
from pileprep.training.pieces import Preshuffled

STRATEGIES = ("auto", "index", "stream")
PART_TOKENS = 1 << 28  # trained tokens per task of a pass, by default (~1-2 s of a core)


class ScanPart(FileResult):
    """A task of the pass: ``path`` is an .npz of its occurrences and samples (queries x bins)
    and first samples."""


def scan_part(out_dir: str, cfg, queries: str, lo: int, hi: int, edges: list[int],
              target: str) -> ScanPart:
    """One task of the pass (runs on a worker); ``queries``: the file of the queries."""
    faults.checkpoint("count")
    queries = json.loads(Path(queries).read_bytes())
    occ, held, first = ngram.scan_range(out_dir, cfg, queries, lo, hi, edges)
    with atomic.atomic_path(target) as tmp, open(tmp, "wb") as f:
        np.savez(f, occurrences=occ, samples=held, first=first)
    return ScanPart(target)


def count_terms(order: TrainingOrder, queries: list[list[int]], first_step: int, end_step: int,
                bins: int | list[int] = 1, strategy: str = "auto",
                cluster: ClusterConfig | None = None, quiet: bool = True,
                part_samples: int | None = None) -> ngram.Counts:
    """Counts of token sequences in the corpus and in the trained samples of steps
    ``first_step .. end_step-1`` (in ``bins`` step ranges), from the dataset's n-gram index and,
    for the queries ``strategy`` sends there, a streaming pass over the trained samples
    (``part_samples`` training samples per task; a pass of one task runs in this process)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if any(not q for q in queries):
        raise ConfigError("a query is empty")
    if part_samples is not None and part_samples < 1:
        raise ConfigError("--part-samples must be at least 1")
    order.check_steps(first_step, end_step)
    cluster = cluster or ClusterConfig(scheduler="synchronous")
    index = SuffixIndex(order.out_dir, order.data)
    edges = ngram.bin_edges(first_step, end_step, bins)
    B, L = order.cfg.batch_size, order.cfg.seq_length
    trained_tokens = (end_step - first_step) * B * (L + 1)
    hits = ngram.hit_costs(order, index, queries) if strategy != "stream" else None
    if strategy == "auto":
        workers = 1 if cluster.scheduler == "synchronous" else cluster.workers
        stream = ngram.choose_stream(hits, trained_tokens, workers)
    else:
        stream = np.full(len(queries), strategy == "stream")
    out = _empty(queries, edges)
    if (~stream).any():
        _by_index(out, np.flatnonzero(~stream), order, index, hits, quiet)
    if stream.any():
        _by_pass(out, np.flatnonzero(stream), order, index, cluster, quiet, part_samples)
    out.strategy = ["stream" if s else "index" for s in stream]
    return out


def _by_index(out: ngram.Counts, which: np.ndarray, order, index, hits, quiet: bool) -> None:
    """Count queries ``which`` by their index hits, into ``out``."""
    total = int(hits[which].sum()) // order.schedule.epochs  # hits, not their copies
    bar = Progress("count: index hits", total, len(which), quiet=quiet, unit="queries",
                   amount="hits")
    first, end = out.edges[0], out.edges[-1]
    got = ngram.counter_for(order, index, first, end, out.edges, quiet).count(
        [out.queries[i] for i in which], _advance(bar))
    bar.close()
    for name in ("corpus", "samples", "occurrences", "first"):
        getattr(out, name)[which] = getattr(got, name)


def _by_pass(out: ngram.Counts, which: np.ndarray, order, index, cluster, quiet: bool,
             part_samples: int | None) -> None:
    """Count queries ``which`` by one streaming pass, into ``out``."""
    asked = [out.queries[i] for i in which]
    occ, held, first, out.pass_cpu_seconds = _pass(order, asked, out.edges, cluster, quiet,
                                                   part_samples)
    out.occurrences[which], out.samples[which], out.first[which] = occ, held, first
    every_item = (isinstance(order.schedule, Preshuffled) and out.edges[0] == 0
                  and out.edges[-1] * order.cfg.batch_size >= len(order.data))
    # A preshuffled dataset's items are its documents: when the pass read them all, its
    # occurrences are the corpus's (the index's count would take the ones across items too).
    out.corpus[which] = occ.sum(axis=1) if every_item else ngram.corpus_counts(order, index, asked)


def _advance(bar: Progress):
    """The counter's progress callback: hits mapped, and queries done so far."""
    def advance(hits: int, done: int) -> None:
        bar.update(nbytes=hits, items=done - bar.items)
    return advance


def _empty(queries, edges) -> ngram.Counts:
    Q, bins = len(queries), len(edges) - 1
    return ngram.Counts([list(map(int, q)) for q in queries], edges, np.zeros(Q, np.int64),
                        np.zeros((Q, bins), np.int64), np.zeros((Q, bins), np.int64),
                        np.full(Q, -1, np.int64))


def _pass(order: TrainingOrder, queries, edges, cluster: ClusterConfig, quiet: bool,
          part_samples: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The streaming pass as tasks over ranges of training samples: their counts summed, each
    query's first sample (the earliest part's), and the tasks' CPU seconds."""
    B, L1 = order.cfg.batch_size, order.cfg.seq_length + 1
    lo, hi = edges[0] * B, edges[-1] * B
    per = part_samples or max(1, PART_TOKENS // L1)
    with work_dir(order, COUNT_WORK, "count", queries, edges) as work:
        asked = _write_queries(work, queries)  # once: not in every task's arguments and record
        identity = {"data": data_identity(order.prefix), "cfg": asdict(order.cfg), "edges": edges,
                    "queries": asked[1]}
        tasks = [Task(name=f"count-{i}", stage=Stage.COUNT, fn=scan_part,
                      kwargs=dict(out_dir=str(order.out_dir), cfg=order.cfg, queries=str(asked[0]),
                                  lo=a, hi=min(hi, a + per), edges=edges,
                                  target=str(work / f"part-{i:05d}.npz")),
                      done=work / f"part-{i:05d}.done.json",
                      inputs={**identity, "range": [a, min(hi, a + per)]}, result_type=ScanPart,
                      weight=(min(hi, a + per) - a) * L1 * order.data.dtype.itemsize)
                 for i, a in enumerate(range(lo, hi, per))]
        if len(tasks) == 1:  # no cluster to start for one task
            cluster = replace(cluster, scheduler="synchronous")
        with Runner(cluster, quiet) as runner:
            parts = runner.run(tasks, "count")
            cpu = sum(runner.busy.values())
        return (*_sum_parts(parts, len(queries), len(edges) - 1), cpu)


def _sum_parts(parts: list[ScanPart], Q: int, bins: int) -> tuple[np.ndarray, ...]:
    occ = np.zeros((Q, bins), np.int64)
    held = np.zeros_like(occ)
    first = np.full(Q, -1, np.int64)
    for part in parts:  # in sample order
        with np.load(part.path) as z:
            occ += z["occurrences"]
            held += z["samples"]
            new = (first < 0) & (z["first"] >= 0)
            first[new] = z["first"][new]
    return occ, held, first


def _write_queries(work: Path, queries) -> tuple[Path, str]:
    """The queries as a file in the work folder, and its sha256."""
    text = json.dumps(queries).encode()
    path = work / "queries.json"
    if not path.exists() or path.read_bytes() != text:
        atomic.write_bytes(path, text)
    return path, hashlib.sha256(text).hexdigest()


@contextlib.contextmanager
def work_dir(order: TrainingOrder, folder: str, command: str, *settings) -> Iterator[Path]:
    """The work folder of one query job (``ngram/<folder>/<hash of the order and settings>``):
    a rerun with the same settings finds its finished parts there. Held locked while the job
    runs (a second identical job is refused, naming the first), emptied when it ends well."""
    key = json.dumps([str(order.prefix), asdict(order.cfg), *settings], default=str)
    work = Path(order.out_dir) / NGRAM_DIR / folder / hashlib.sha256(key.encode()).hexdigest()[:16]
    with locked(work, command):
        yield work
        for p in work.iterdir():  # all but the lock, which goes as the lock is let go
            if p.name != LOCK_FILE:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    with contextlib.suppress(OSError):
        work.rmdir()
        work.parent.rmdir()  # the last job of its kind: no empty folder left behind
