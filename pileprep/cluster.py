"""Run a stage's tasks on Dask: a local cluster, an existing cluster, or the synchronous scheduler.

Tasks are independent and write their own outputs; the runner only hands back each task's small
result as it completes, so the driver can show progress and keep results in a fixed order. Which
scheduler runs them never changes the output: results are re-ordered by task index.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any, Callable, Iterator, Sequence

import dask

from .config import ClusterConfig
from .progress import log

SYNCHRONOUS = "synchronous"
# Dask starts workers with MALLOC_TRIM_THRESHOLD_ set, which also freezes glibc's mmap threshold
# at 128 KiB: every larger buffer (a batch's code points and ids, Arrow pages) is then mapped,
# faulted in page by page and unmapped again, batch after batch: 11.3 s instead of 9.8 s for the
# tokenizer benchmark's build (benchmarks/engines.py --allocator-check), once the heap may keep
# buffers up to 32 MiB. Set before the worker processes start: glibc reads it at start.
WORKER_PRE_SPAWN_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20)}


class Runner:
    def __init__(self, cfg: ClusterConfig, quiet: bool = False):
        self.cfg, self.quiet = cfg, quiet
        self.client = self.cluster = None
        if cfg.scheduler == SYNCHRONOUS:
            log("dask: synchronous scheduler (one process, one task at a time)", quiet)
            return
        # Each worker runs one task at a time in its own process; a tokenizer that also spawned
        # a thread per core in every worker would oversubscribe the machine.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from distributed import Client, LocalCluster

        if cfg.scheduler:
            self.client = Client(cfg.scheduler, timeout="30s")
        else:
            environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
                       **WORKER_PRE_SPAWN_ENV}
            with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
                self.cluster = LocalCluster(
                    n_workers=cfg.workers, threads_per_worker=1, processes=True,
                    # A failed task's exception reaches the driver, which reports it in one
                    # line; the workers' own "Compute Failed" log would repeat it with a traceback.
                    memory_limit=cfg.memory_limit, silence_logs=logging.CRITICAL,
                    # Any free port: two builds (or a user's own cluster) never fight over 8787.
                    dashboard_address=":0")
            self.client = Client(self.cluster)
        workers = len(self.client.scheduler_info().get("workers", {}))
        log(f"dask: scheduler {self.client.scheduler.address}, {workers} workers"
            + (f", dashboard {self.client.dashboard_link}" if _has_bokeh() else ""), quiet)

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
        """Run ``fn(*args)`` for each args tuple; yield ``(index, result)`` as tasks finish."""
        if self.client is None:
            for i, args in enumerate(calls):
                yield i, dask.delayed(fn, pure=False)(*args).compute(scheduler=SYNCHRONOUS)
            return
        from distributed import as_completed

        batch = uuid.uuid4().hex[:12]  # unique keys: never reuse a result held by the cluster
        futures = [self.client.submit(fn, *args, pure=False, key=f"{fn.__name__}-{batch}-{i}")
                   for i, args in enumerate(calls)]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for future, result in as_completed(futures, with_results=True):
                yield index[future.key], result
        finally:
            for f in futures:
                f.cancel()

    def run_graph(self, initial: Sequence[tuple], expand: Callable[[tuple, Any], Sequence[tuple]]
                  ) -> Iterator[tuple[Any, Any]]:
        """Run jobs ``(tag, fn, args)``; each finished job may add more through ``expand(job,
        result)``. Yields ``(tag, result)`` as jobs finish. Lets a later stage start on the first
        results of an earlier one (tokenize a shard's partitions while other shards are read)."""
        if self.client is None:
            queue = list(initial)
            while queue:
                job = queue.pop(0)
                result = dask.delayed(job[1], pure=False)(*job[2]).compute(scheduler=SYNCHRONOUS)
                yield job[0], result
                queue.extend(expand(job, result))
            return
        from distributed import as_completed

        batch = uuid.uuid4().hex[:12]
        jobs: dict[str, tuple] = {}

        def submit(job: tuple):
            future = self.client.submit(job[1], *job[2], pure=False,
                                        key=f"{job[1].__name__}-{batch}-{len(jobs)}")
            jobs[future.key] = job
            return future

        pending = as_completed([submit(j) for j in initial], with_results=True)
        try:
            for future, result in pending:
                job = jobs[future.key]
                yield job[0], result
                for more in expand(job, result):
                    pending.add(submit(more))
        finally:
            pending.clear()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True
