"""Run tasks (:mod:`pileprep.runner.tasks`) on Dask: a local cluster, an existing cluster, or the
synchronous scheduler.

Tasks are independent and write their own outputs; the runner only hands back each task's small
result as it completes, so the driver can show progress and keep results in a fixed order. Which
scheduler runs them never changes the output: results are placed by task index, and finished
tasks (a matching completion record) are reused rather than run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from typing import Any, Callable, Iterator, Sequence

import dask

from pileprep.runner import prefork
from pileprep.runner.tasks import Stage, Task, as_task_error, execute_timed, task_errors
from pileprep.core.config import ClusterConfig
from pileprep.core.errors import BadRecordError, ClusterError
from pileprep.core.progress import Progress, log

SYNCHRONOUS = "synchronous"
# Which ready task a free worker takes first: work that consumes an intermediate (a partition,
# a token part) before work that makes more of them (reading the next shard). So tokenization
# starts as soon as partitions exist, and scratch disk holds few unconsumed files.
STAGE_PRIORITY = {"ingest": 0}
OTHER_PRIORITY = 1
_ORDERS = 1 << 48  # orders within a stage
# Dask's statistical profiler samples each worker's task thread every 10 ms from its event loop:
# 0.6 s of CPU per worker in a 22 s build (docs/benchmarks.md), for the dashboard's profile page
# only. A cluster pileprep starts goes without; a user's own (--scheduler) keeps its settings.
LOCAL_WORKER_CONFIG = {"distributed.worker.profile.enabled": False}
LOCAL_WORKER_PRELOAD = "pileprep.runner.local_worker"  # Ctrl-C is the driver's to handle
POLL_SECONDS = 0.5  # how often the driver looks for work announced by running tasks
SETTLE_SECONDS = 30.0  # how long a failed run waits for its tasks still running on a cluster


def priority(task: Task) -> int:
    """Dask's priority (higher runs first): by stage, then by ``task.order``. In the order the
    dataset's ``.bin`` is appended, a part does not wait long for an earlier one."""
    return STAGE_PRIORITY.get(task.stage, OTHER_PRIORITY) * _ORDERS - min(task.order, _ORDERS - 1)


class Runner:
    """Runs tasks on Dask. A local cluster starts in the background from the moment the runner
    is made, so its workers spawn while the driver still checks its settings and tokenizer;
    the first use waits for it. ``close(wait=False)`` lets the workers shut down while the
    driver writes the outputs."""

    def __init__(self, cfg: ClusterConfig, quiet: bool = False):
        self.cfg, self.quiet = cfg, quiet
        self._client = self.cluster = None
        self.busy: dict[str, float] = {}  # CPU seconds of each stage's task functions
        self.synchronous = cfg.scheduler == SYNCHRONOUS
        self._workers = 1
        self._error: BaseException | None = None
        self._shut_error: BaseException | None = None
        self._starting = self._closing = None
        self._no_workers_since: float | None = None
        # Each worker runs one task at a time in its own process; a tokenizer that also spawned
        # a thread per core in every worker would oversubscribe the machine (and its time would
        # not be counted on the task's thread).
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if self.synchronous:
            log("dask: synchronous scheduler (one process, one task at a time)", quiet)
            return
        self._starting = threading.Thread(target=self._start, name="pileprep-cluster-start",
                                          daemon=True)
        self._starting.start()

    def _start(self) -> None:
        try:
            from distributed import Client, LocalCluster

            if self.cfg.scheduler:
                self._client = _connect(Client, self.cfg.scheduler, self.cfg.connect_timeout)
                return
            environ = prefork.worker_environ()
            method = prefork.start_method()  # forked from a warm server, or spawned
            preload = [*dask.config.get("distributed.worker.preload", []), LOCAL_WORKER_PRELOAD]
            with dask.config.set({"distributed.nanny.pre-spawn-environ": environ,
                                  prefork.METHOD_KEY: method, **LOCAL_WORKER_CONFIG,
                                  "distributed.worker.preload": preload}):
                self.cluster = LocalCluster(
                    n_workers=self.cfg.workers, threads_per_worker=1, processes=True,
                    # A failed task's exception reaches the driver, which reports it in one
                    # line; the workers' own "Compute Failed" log would repeat it with a traceback.
                    memory_limit=self.cfg.memory_limit, silence_logs=logging.CRITICAL,
                    # Any free port: two builds (or a user's own cluster) never fight over 8787.
                    dashboard_address=":0")
            self._client = Client(self.cluster)
        except BaseException as exc:  # raised in the driver's thread by ready()
            self._error = exc

    def ready(self) -> None:
        """Wait for the cluster; raise what starting it raised (every time)."""
        if self._error is not None:
            raise self._error
        if self._starting is None:
            return
        self._starting.join()
        self._starting = None
        if self._error is not None:
            raise self._error
        self._workers = len(self._client.scheduler_info().get("workers", {}))
        log(f"dask: scheduler {self._client.scheduler.address}, {self._workers} workers"
            + (f", dashboard {self._client.dashboard_link}" if _has_bokeh() else ""), self.quiet)

    @property
    def client(self):
        """The Dask client, once the cluster is up (None on the synchronous scheduler)."""
        self.ready()
        return self._client

    @property
    def workers(self) -> int:
        self.ready()
        return self._workers

    def run(self, tasks: Sequence[Task], label: str, progress: Progress | None = None,
            here: bool = False) -> list:
        """Every task's result, in task order: reused when finished, else run on the cluster
        (``here``: in this process, see :meth:`run_graph`)."""
        results: list = [None] * len(tasks)
        todo = []
        for i, task in enumerate(tasks):
            results[i] = task.finished()
            if results[i] is None:
                todo.append(i)
        if len(todo) < len(tasks):
            log(f"{label}: reusing {len(tasks) - len(todo)} of {len(tasks)} tasks", self.quiet)
        if not todo:
            return results
        bar = progress or Progress(label, 0, len(todo), quiet=self.quiet)
        index = {id(tasks[i]): i for i in todo}
        for task, result in self.run_graph([tasks[i] for i in todo], here=here):
            results[index[id(task)]] = result
            bar.update(items=1)
        bar.close()
        return results

    def run_graph(self, initial: Sequence[Task],
                  expand: Callable[[Task, Any], Sequence[Task]] = lambda task, result: (),
                  poll: Callable[[int], Sequence[Task]] = lambda outstanding: (),
                  stop: Callable[[], None] = lambda: None,
                  here: bool = False) -> Iterator[tuple[Any, Any]]:
        """Run tasks; each finished one may add more through ``expand(task, result)``, and
        ``poll(outstanding)``, called about every ``POLL_SECONDS`` while tasks run with the
        number of submitted, unfinished tasks, may add work that running tasks announced
        (partitions cut from a shard still being read). Yields
        ``(task, result)`` as tasks finish. Ready work goes by :func:`priority`, so a later
        stage starts on the first results of an earlier one. When the run fails or is
        interrupted, ``stop()`` tells the tasks still running to end (Dask cannot stop them).
        ``here``: run them in this process, one at a time, as the synchronous scheduler does
        (work so small that the round trips to the workers would cost more than it)."""
        if self.synchronous or here:
            yield from self._run_synchronous(initial, expand, poll)
            return
        self.ready()
        from distributed import as_completed

        batch = uuid.uuid4().hex[:12]  # unique keys: never reuse a result held by the cluster
        jobs: dict[str, Task] = {}
        submitted = 0

        def submit(task: Task):
            nonlocal submitted
            future = self.client.submit(execute_timed, task, pure=False, priority=priority(task),
                                        key=f"{task.stage}-{batch}-{submitted}")
            submitted += 1
            jobs[future.key] = task
            return future

        pending = as_completed([submit(t) for t in initial], with_results=True)
        first = _FirstError()
        last_poll = time.monotonic()
        try:
            while not pending.is_empty():
                if not pending.has_ready():
                    with pending.thread_condition:  # woken by a finished task, or after a while
                        pending.thread_condition.wait(POLL_SECONDS)
                for future, outcome in pending.next_batch(block=False):
                    task = jobs.pop(future.key)
                    if future.key in first.cancelled:
                        continue
                    if future.status != "finished":
                        first.add(task, self._failure(task, future.status, outcome))
                        first.cancel_later(pending.futures, jobs, self._running())
                    else:
                        result, seconds = outcome
                        self._count(task, seconds)
                        yield task, result
                        for more in expand(task, result):
                            pending.add(submit(more))
                    first.raise_when_known(jobs)
                if time.monotonic() - last_poll >= POLL_SECONDS:
                    last_poll = time.monotonic()
                    self._check_workers()
                    for more in poll(len(jobs)):
                        pending.add(submit(more))
        except BaseException:
            stop()
            self._settle(list(pending.futures))
            raise
        finally:
            with contextlib.suppress(Exception):  # the scheduler may be gone
                self._client.cancel(list(pending.futures))
            pending.clear()

    def _check_workers(self) -> None:
        """A cluster left without workers (none started, or all lost) for longer than the
        connect timeout would wait for ever: say so."""
        try:
            n = len(self._client.scheduler_info().get("workers", {}))
        except Exception:  # noqa: BLE001 - a lost scheduler shows in the futures
            return
        now = time.monotonic()
        if n:
            self._no_workers_since = None
            return
        self._no_workers_since = self._no_workers_since or now
        if now - self._no_workers_since > self.cfg.connect_timeout:
            raise ClusterError(f"the Dask scheduler at {self._client.scheduler.address} has had "
                               f"no workers for {now - self._no_workers_since:.0f} s; start some "
                               f"(dask worker {self._client.scheduler.address}) and run the same "
                               "command again")

    def _running(self) -> set[str]:
        """Keys the cluster's workers are running (or hold to run)."""
        try:
            return {k for keys in self._client.processing().values() for k in keys}
        except Exception:  # noqa: BLE001 - a lost scheduler shows in the futures
            return set()

    def _settle(self, futures: list, timeout: float = SETTLE_SECONDS) -> None:
        """A failed run on a cluster pileprep did not start: cancel what has not started, and
        wait (at most ``timeout``) for what runs to end, so a rerun does not race it. A local
        cluster's workers end with it."""
        if self.cluster is not None or not futures:
            return
        with contextlib.suppress(Exception):  # a lost scheduler: nothing to wait for
            running = self._running()
            self._client.cancel([f for f in futures if f.key not in running])
            from distributed import wait

            wait([f for f in futures if f.key in running], timeout=timeout)

    def _failure(self, task: Task, status: str, outcome: Any) -> BaseException:
        """The error to report for a task the cluster did not finish. ``outcome`` is what
        ``as_completed`` hands back for it: ``(type, exception, traceback)`` for an error, the
        cancellation otherwise (Dask cancels every future when it loses the scheduler)."""
        from distributed.scheduler import KilledWorker

        address = self._client.scheduler.address if self._client is not None else "?"
        if status != "error":
            # The client's reconnection attempts, cancelled when it closes, would each log a
            # traceback; the line below says it all.
            _silence_dask()
            return ClusterError(f"lost the Dask scheduler at {address} while {task.name} ran "
                                f"({status}); run the same command again to resume")
        _, exc, tb = outcome
        if isinstance(exc, KilledWorker):
            more = (f"--memory-limit, now {self.cfg.memory_limit}" if self.cluster is not None
                    else "start your dask workers with a larger --memory-limit")
            return ClusterError(
                f"{task.name}: every worker that ran it died, as many times as the scheduler "
                f"retries a task (distributed.scheduler.allowed-failures); the usual cause is "
                f"memory: give workers more ({more}) or use a smaller --partition-bytes")
        return as_task_error(task.name, exc.with_traceback(tb))

    def _run_synchronous(self, initial, expand, poll) -> Iterator[tuple[Any, Any]]:
        """One task at a time in this process, the highest priority first (then in order)."""
        queue = list(initial)
        while queue:
            # max() keeps the first of equals: in order within a priority
            task = queue.pop(max(range(len(queue)), key=lambda i: priority(queue[i])))
            result, seconds = dask.delayed(execute_timed, pure=False)(task).compute(
                scheduler=SYNCHRONOUS)
            self._count(task, seconds)
            yield task, result
            queue.extend(expand(task, result))
            queue.extend(poll(len(queue)))

    def _count(self, task: Task, seconds: float) -> None:
        self.busy[task.stage] = self.busy.get(task.stage, 0.0) + seconds

    @contextlib.contextmanager
    def inline(self, name: str, stage: Stage) -> Iterator[None]:
        """Work the driver does itself, too small for a task: an error in it reported as task
        ``name``'s would be (one line), its CPU seconds counted for ``stage`` as a task's."""
        start = time.thread_time()
        with task_errors(name):
            yield
        self.busy[stage] = self.busy.get(stage, 0.0) + time.thread_time() - start

    def move_busy(self, source: str, seconds: dict[str, float]) -> None:
        """Count CPU seconds spent inside ``source``'s tasks for the stages they belong to."""
        for stage, s in seconds.items():
            self.busy[source] = self.busy.get(source, 0.0) - s
            self.busy[stage] = self.busy.get(stage, 0.0) + s

    def close(self, wait: bool = True) -> None:
        """Shut the cluster down; with ``wait=False`` in the background (a later ``close()``
        waits for it, and raises what shutting down raised). Worker processes take a while to
        exit."""
        if self._closing is None:
            self._closing = threading.Thread(target=self._shut, name="pileprep-cluster-close",
                                             daemon=True)
            self._closing.start()
        if wait:
            with _no_interrupts():  # a second Ctrl-C must not leave the cluster half shut
                self._closing.join()
            if self._shut_error is not None:
                error, self._shut_error = self._shut_error, None
                raise error

    def _shut(self) -> None:
        if self._starting is not None:
            self._starting.join()
        try:
            if self._client is not None:
                self._client.close()
        except BaseException as exc:  # raised by close() in the driver's thread
            self._shut_error = exc
        finally:
            try:
                if self.cluster is not None:
                    self.cluster.close()
            except BaseException as exc:
                self._shut_error = self._shut_error or exc

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _FirstError:
    """Which error a run that failed on a cluster reports: the same one the synchronous
    scheduler, which reads shards in order, would. A bad record's place in the data is known,
    so it waits for the shards before it (their ingest tasks finish; a later shard's are
    cancelled) and the earliest shard's bad record is reported. Any other error at once."""

    def __init__(self):
        self.errors: list[tuple[int, BaseException]] = []  # (shard order, bad record)
        self.cancelled: set[str] = set()  # keys of the futures cancelled here

    def add(self, task: Task, error: BaseException) -> None:
        if not (isinstance(error, BadRecordError) and task.stage == "ingest"):
            raise error
        self.errors.append((task.order, error))

    def cancel_later(self, futures, jobs: dict[str, Task], running: set[str]) -> None:
        """Cancel the reads of shards after the earliest one with a bad record that have not
        started (one that runs ends when the run is given up: see ``run_graph``'s ``stop``)."""
        first = min(order for order, _ in self.errors)
        for future in list(futures):
            task = jobs.get(future.key)
            if (task is not None and task.stage == Stage.INGEST and task.order > first
                    and future.key not in running):
                self.cancelled.add(future.key)
                future.cancel()

    def raise_when_known(self, jobs: dict[str, Task]) -> None:
        """Raise the earliest bad record once no earlier shard is still being read."""
        if not self.errors:
            return
        order, error = min(self.errors, key=lambda e: e[0])
        if not any(t.stage == "ingest" and t.order < order for k, t in jobs.items()
                   if k not in self.cancelled):
            raise error


def _silence_dask() -> None:
    """Dask's loggers (each has its own level) quiet from now on in this process."""
    for name in ["distributed", *logging.root.manager.loggerDict]:
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)


@contextlib.contextmanager
def _no_interrupts():
    """SIGINT ignored meanwhile (in the main thread; elsewhere it cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _connect(client_type, address: str, timeout: float):
    """A client of the scheduler at ``address``, or one line saying it cannot be reached."""
    try:
        return client_type(address, timeout=f"{timeout}s")
    except Exception as exc:  # noqa: BLE001 - any failure to connect is one line
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ClusterError(f"cannot reach the Dask scheduler at {address} "
                           f"(--scheduler): {reason}") from None


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True
