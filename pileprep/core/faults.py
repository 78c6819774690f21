"""Named points where the reliability tests make a build fail, as the world would.

``PILEPREP_KILL_AT=POINT[:N]`` sends SIGKILL to the build's whole process group the N-th time
(default first) a process reaches ``POINT``. With ``PILEPREP_KILL_WORKER_ONCE=MARKER`` only the
process reaching the point dies, once (the marker file records it): a lost Dask worker.

``PILEPREP_FAIL_AT=POINT[:N]=KIND`` makes the N-th checkpoint ``POINT`` of a process fail with:

- ``enospc``: ``OSError(ENOSPC)`` on the file being written there (a full disk);
- ``bug``: a ``RuntimeError`` no stage expects (an internal error, reported with its task);
- ``truncate`` / ``delete``: the file at the point (an input being read) is cut to half its
  size, or deleted, as another program might;
- ``sigint``: SIGINT to the whole process group, as Ctrl-C in a terminal sends it;
- ``memory``: memory allocated until the process is killed (a Dask worker over its limit is
  restarted by its nanny); where nothing kills it, ``MemoryError`` after ``MEMORY_CAP`` bytes.

Unset, a checkpoint costs one dictionary lookup per variable.
"""

from __future__ import annotations

import errno
import os
import signal
import time

KILL_AT = "PILEPREP_KILL_AT"
WORKER_ONCE = "PILEPREP_KILL_WORKER_ONCE"
FAIL_AT = "PILEPREP_FAIL_AT"
POINTS = ("read", "write", "ingest", "tokenize", "dedup", "append", "pack", "schedule", "commit", "index",
          "count", "contamination")
KINDS = ("enospc", "bug", "truncate", "delete", "sigint", "memory")
MEMORY_CAP = 8 << 30
_seen: dict[tuple[str, str], int] = {}


def checkpoint(point: str, path: str | os.PathLike | None = None) -> None:
    """A place a test may fail; ``path``: the file being written there, if one is."""
    if _reached(KILL_AT, point):
        _kill()
    spec = os.environ.get(FAIL_AT)
    if spec and _reached(FAIL_AT, point):
        _fail(spec.rpartition("=")[2], point, path)


def _reached(var: str, point: str) -> bool:
    """Whether this is the N-th time this process reaches ``point`` named in ``var``."""
    spec = os.environ.get(var)
    if not spec:
        return False
    name, _, nth = spec.partition("=")[0].partition(":")
    if name != point:
        return False
    _seen[var, point] = _seen.get((var, point), 0) + 1
    return _seen[var, point] == int(nth or 1)


def _kill() -> None:
    marker = os.environ.get(WORKER_ONCE)
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _fail(kind: str, point: str, path) -> None:
    if kind == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *([str(path)] if path else []))
    if kind == "truncate":
        os.truncate(path, os.path.getsize(path) // 2)
        return
    if kind == "delete":
        os.unlink(path)
        return
    if kind == "sigint":
        os.killpg(os.getpgrp(), signal.SIGINT)
        time.sleep(1)  # as a user's Ctrl-C would, it lands while the work goes on
        return
    if kind == "memory":
        held = []
        while len(held) * (64 << 20) < MEMORY_CAP:
            held.append(bytearray(64 << 20))  # zero-filled: really resident
            time.sleep(0.02)  # the nanny looks every 100 ms
        raise MemoryError(f"fault point {point}: {MEMORY_CAP} bytes allocated")
    raise RuntimeError(f"fault point {point}: an internal error ({kind})")
