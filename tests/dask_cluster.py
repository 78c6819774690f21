"""A real dask.distributed cluster on 127.0.0.1 for tests: a `dask scheduler` process and
`dask worker` processes, each in its own session, as they would run on several machines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DASK = [sys.executable, "-m", "dask"]


class RemoteCluster:
    def __init__(self, root: Path, workers: int = 2, env: dict | None = None):
        self.root, self.env = Path(root), {**os.environ, "TOKENIZERS_PARALLELISM": "false",
                                           **(env or {})}
        self.root.mkdir(parents=True, exist_ok=True)
        sched_file = self.root / "scheduler.json"
        sched_file.unlink(missing_ok=True)
        self.scheduler = self._start("scheduler", "--host", "127.0.0.1", "--port", "0",
                                     "--no-dashboard", "--scheduler-file", str(sched_file))
        self.workers: list[subprocess.Popen] = []
        self.address = self._address(sched_file)
        for i in range(workers):
            self.add_worker(i)
        self.wait_for_workers(workers)

    def _start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*DASK, *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=self.env, start_new_session=True)

    def _address(self, sched_file: Path) -> str:
        deadline = time.monotonic() + 60
        while not (sched_file.exists() and sched_file.stat().st_size):
            if time.monotonic() > deadline or self.scheduler.poll() is not None:
                raise RuntimeError("the dask scheduler did not start")
            time.sleep(0.1)
        return json.loads(sched_file.read_text())["address"]

    def add_worker(self, i: int) -> None:
        self.workers.append(self._start(
            "worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
            "--local-directory", str(self.root / f"w{i}"), "--memory-limit", "2GiB"))

    def client(self):
        from distributed import Client

        return Client(self.address, timeout="30s")

    def wait_for_workers(self, n: int) -> None:
        with self.client() as client:
            client.wait_for_workers(n, timeout=60)

    def run_on_workers(self, fn) -> None:
        """Run ``fn()`` in every worker process (to set a fault point's variables there)."""
        with self.client() as client:
            client.run(fn)

    def kill_worker(self, i: int) -> None:
        """kill -9 a `dask worker` and its nanny's worker process: gone, not replaced."""
        os.killpg(self.workers[i].pid, signal.SIGKILL)
        self.workers[i].wait()

    def kill_scheduler(self) -> None:
        os.killpg(self.scheduler.pid, signal.SIGKILL)
        self.scheduler.wait()

    def stop(self) -> None:
        for p in [*self.workers, self.scheduler][::-1]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in [*self.workers, self.scheduler]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def set_worker_env(**variables: str):
    """A function for :meth:`RemoteCluster.run_on_workers`: set (or, with "", unset) variables
    in a worker process and forget the fault points it reached."""
    def apply():
        from pileprep.core import faults

        for k, v in variables.items():
            if v:
                os.environ[k] = v
            else:
                os.environ.pop(k, None)
        faults._seen.clear()
    return apply
