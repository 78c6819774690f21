"""An output directory, written by one command at a time, all at once.

Every command that writes an output directory (build, dedup, adopt, align, compare, join;
schedule and index, which add files beside a dataset, take its lock) does it through
:class:`OutputDir`, in this order:

1. **lock** (entering it): an exclusive ``flock`` on ``OUT_DIR/.pileprep.lock``, whose text
   names the holder. Two commands writing one directory at once would take each other's work
   files and stage; the second is refused naming the first's pid. The kernel drops the lock
   with the process, so a killed command never leaves a stale one.
2. **recover**: finish the commit a killed command left half done (or drop its unjournaled
   stage), so the directory never holds a mix of two runs.
3. **guard**: refuse to replace a dataset made from other inputs or settings, unless asked to.
4. **stage**: write every output into a fresh ``.pileprep-staging/``.
5. **commit**: the manifest last, then a journal, then the moves (:func:`atomic.commit`); the
   outputs of a dataset replaced with ``--overwrite`` that this run did not write again are
   removed with them.
6. **clean**: remove the work directory (unless kept).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

from pileprep.core import atomic
from pileprep.core.errors import ConfigError
from pileprep.core.files import MANIFEST, STAGING, WORK_DIR
from pileprep.core.progress import log

LOCK_FILE = ".pileprep.lock"
NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP}  # file systems without flock


class OutputDir:
    def __init__(self, path: str | Path, command: str, quiet: bool = False):
        self.path, self.command, self.quiet = Path(path), command, quiet
        self._lock: contextlib.ExitStack | None = None
        self._replaced: list[str] = []  # outputs of a different dataset this run replaces

    @property
    def work(self) -> Path:
        return self.path / WORK_DIR

    @property
    def manifest(self) -> dict | None:
        """The manifest of what the directory holds now, if anything."""
        path = self.path / MANIFEST
        return atomic.read_json(path) if path.exists() else None

    def __enter__(self) -> "OutputDir":
        self._created = not self.path.exists()
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(locked(self.path, self.command))
        self.recover()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.close()
        if self._created:  # a command that failed before writing leaves no empty directory
            with contextlib.suppress(OSError):
                self.path.rmdir()

    def recover(self) -> None:
        if atomic.finish_interrupted(self.path):
            log(f"finished moving the outputs of an interrupted {self.command} into {self.path}",
                self.quiet)

    def guard(self, same: Callable[[dict], bool], overwrite: bool, what: str) -> None:
        """Refuse a directory holding a dataset for which ``same(manifest)`` is false, unless
        ``overwrite``; ``what`` says what differs, for the error."""
        old = self.manifest
        if old is None or same(old):
            return
        if not overwrite:
            raise ConfigError(f"output directory {self.path} holds {what}; choose another "
                              "--output or pass --overwrite")
        # Replaced: its outputs this run does not write again go at the commit (another
        # dataset name, no schedule now), or they would sit beside the new ones, looking valid.
        self._replaced = [name for name in old.get("outputs", {}) if "/" not in name]

    def stage(self) -> Path:
        """A fresh, empty staging directory for this run's outputs."""
        return atomic.fresh_stage(self.path)

    def commit(self, stage: Path, manifest: dict | None) -> None:
        """Write ``manifest`` (if any) into ``stage`` and move every staged file in."""
        if manifest is not None:
            atomic.write_json(stage / MANIFEST, manifest)
        staged = {p.name for p in stage.iterdir()}
        atomic.commit(stage, self.path, [n for n in self._replaced if n not in staged])

    def clean(self, keep_work: bool, work: Path | None = None) -> None:
        """Remove this run's work files (``work``, or the whole work directory)."""
        if not keep_work:
            shutil.rmtree(work or self.work, ignore_errors=True)


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
        except OSError as exc:
            if exc.errno in NO_FLOCK:  # e.g. Lustre mounted noflock, some NFS or FUSE mounts
                log(f"warning: {path.parent} cannot be locked ({exc.strerror}); make sure no "
                    "other pileprep command writes it meanwhile", False)
                return fd
            if not isinstance(exc, BlockingIOError):
                raise OSError(exc.errno, exc.strerror, str(path)) from None
            holder = os.pread(fd, 400, 0).decode(errors="replace").strip()
            os.close(fd)
            raise ConfigError(f"{path.parent} is in use by {holder or 'another pileprep command'}"
                              "; wait for it to end (or choose another output directory)") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the holder removed it as we opened it
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"pileprep {command} (pid {os.getpid()})\n".encode())
            return fd
        os.close(fd)
