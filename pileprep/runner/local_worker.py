"""Dask preload of the workers of a local cluster pileprep starts.

Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the driver, and the
local workers with it. The driver reports the interruption in one line and shuts the cluster
down; a worker that also took the signal would print a ``KeyboardInterrupt`` traceback from
its event loop, and might stop in the middle of writing a file. So a local worker ignores it
(forked workers inherit that from the fork server, :mod:`pileprep.runner.warm`; a spawned one
sets it here, as it starts).
"""

from __future__ import annotations

import signal
import threading


def ignore_interrupts() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def dask_setup(worker) -> None:  # noqa: ARG001 - Dask's preload hook
    ignore_interrupts()
