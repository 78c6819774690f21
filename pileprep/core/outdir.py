"""One writer per output directory at a time.

Two commands writing one ``OUT_DIR`` at once (a build started twice, an index while the build
still runs) would take each other's work files and stage. Each command that writes an output
directory holds :func:`locked` for as long as it does: an exclusive ``flock`` on
``OUT_DIR/.pileprep.lock``, whose text names the holder. The kernel drops the lock with the
process, so a killed command never leaves a stale one; the file is removed when the command
ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from pileprep.core.errors import ConfigError

LOCK_FILE = ".pileprep.lock"


@contextlib.contextmanager
def locked(out: str | Path, command: str) -> Iterator[None]:
    """Hold ``out``'s lock, or raise :class:`ConfigError` naming the process that holds it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    fd = _acquire(path, command)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before the unlock: a waiter then retries on a new file
        os.close(fd)


def _acquire(path: Path, command: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise ConfigError(f"{path.parent} is in use by {holder}; wait for it to end (or "
                              "choose another output directory)") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the holder removed it as we opened it
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"pileprep {command} (pid {os.getpid()})\n".encode())
            return fd
        os.close(fd)


def _holder(fd: int) -> str:
    text = os.pread(fd, 400, 0).decode(errors="replace").strip()
    return text or "another pileprep command"
