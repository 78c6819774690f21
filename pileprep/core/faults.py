"""Named points where the reliability tests kill a build, as ``kill -9`` would.

``PILEPREP_KILL_AT=POINT[:N]`` sends SIGKILL to the build's whole process group the N-th time
(default first) a process reaches ``POINT``. With ``PILEPREP_KILL_WORKER_ONCE=MARKER`` only the
process reaching the point dies, once (the marker file records it): a lost Dask worker. Unset,
a checkpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

KILL_AT = "PILEPREP_KILL_AT"
WORKER_ONCE = "PILEPREP_KILL_WORKER_ONCE"
POINTS = ("ingest", "tokenize", "dedup", "pack", "schedule", "commit")
_seen: dict[str, int] = {}


def checkpoint(point: str) -> None:
    spec = os.environ.get(KILL_AT)
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] != int(nth or 1):
        return
    marker = os.environ.get(WORKER_ONCE)
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    os.killpg(os.getpgrp(), signal.SIGKILL)
