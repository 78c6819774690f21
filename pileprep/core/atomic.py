"""Atomic file writes: write beside the target, flush to disk, then rename over it.

A reader (or a resumed build) therefore sees either the old complete file or the new complete
file, never a torn one. Temporary names carry the process id so concurrent writers of different
targets in one directory never collide.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from pileprep.core import faults
from pileprep.core.errors import FormatError
from pileprep.core.files import JOURNAL, MANIFEST, STAGING


FULL_BYTES = 1 << 20  # a file system with less free space than this is full
# Errors of writing a file, named after it when they name no file (an error of reading
# something else meanwhile is left as it is).
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}


def tmp_path(path: Path) -> Path:
    """A temporary name beside ``path``, unique to this call: two writers of one target (a task
    retried while its first run still goes on, in the same process or not) never share one."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_path(path: str | Path, sync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.
    ``sync=False``: no fsync before the rename, for a scratch file every run writes again
    (durability would buy nothing, and costs a journal commit)."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        yield tmp
        faults.checkpoint("write", path)
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        full = isinstance(exc, OSError) and exc.errno is None and _no_space(tmp.parent)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and not exc.filename and (full or exc.errno in WRITE_ERRORS):
            raise _named(exc, path, full) from exc  # a write's ENOSPC names no file
        if isinstance(exc, OSError) and exc.filename == str(tmp):  # the name the user gave
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def _named(exc: OSError, path: Path, full: bool) -> OSError:
    """``exc`` naming the file it was writing. A short write with no errno (numpy's
    ``tofile``) on a file system that has no room left is said to be what it is."""
    if full:
        return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({exc})", str(path))
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def _no_space(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < FULL_BYTES


def _sync_file_range():
    """libc's ``sync_file_range`` (Linux), or None."""
    try:
        fn = ctypes.CDLL(None).sync_file_range
    except (OSError, AttributeError, TypeError):  # TypeError: no CDLL(None) (Windows)
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


_SYNC_FILE_RANGE = _sync_file_range()
_WRITE = 2  # SYNC_FILE_RANGE_WRITE: start writing the dirty pages back, do not wait


def start_writeback(f) -> None:
    """Have the kernel start writing ``f``'s dirty pages to disk now, without waiting: a large
    file written in steps (a token part) is then mostly on disk by the time the fsync of
    :func:`atomic_path` waits for it, which would otherwise leave a core idle (1.3 s of the two
    workers' wall time in a 1 GB build). Nothing where the call does not exist."""
    if _SYNC_FILE_RANGE is not None:
        f.flush()
        _SYNC_FILE_RANGE(f.fileno(), 0, 0, _WRITE)  # advisory: a failure only costs the wait


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


def read_json(path: str | Path):
    """A JSON file pileprep wrote; a FormatError naming it when it is damaged."""
    try:
        return json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: damaged ({exc})") from None


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically (no pickles: index arrays only)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def write_at(fd: int, data, at: int, path: str | Path, pwrite=os.pwrite) -> None:
    """All of ``data`` at byte ``at`` of the open file ``fd`` (a range of a file made at its
    full size, written by one task of many); an error names ``path``, since a positioned
    write's ENOSPC names no file."""
    view = memoryview(data).cast("B")
    try:
        while view:
            n = pwrite(fd, view[:1 << 30], at)
            view, at = view[n:], at + n
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None


def sha256_file(path: str | Path, on_block=None) -> str:
    """The file's sha256, read in 4 MiB blocks; ``on_block(n)`` after each (progress)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            if on_block is not None:
                on_block(len(chunk))
    return h.hexdigest()


_NO_HARD_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def link(target: Path, alias: Path) -> None:
    """``alias`` names the same bytes as ``target`` (same directory or not): a hard link, else
    a symlink; replaced atomically when it exists."""
    tmp = tmp_path(Path(alias))
    tmp.unlink(missing_ok=True)
    try:
        os.link(target, tmp)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINK:
            raise
        # no hard links here, or another file system: a symlink, by name within
        # one directory (it survives the directory being moved), else by absolute path
        same_dir = Path(target).resolve().parent == Path(alias).resolve().parent
        os.symlink(Path(target).name if same_dir else Path(target).resolve(), tmp)
    os.replace(tmp, alias)


LAST = MANIFEST  # moved last: a directory whose manifest matches its files is complete


def commit(stage: Path, out: Path, remove: Sequence[str] = ()) -> None:
    """Move every file of ``stage`` into ``out``, then delete the files ``remove`` names from
    ``out`` (outputs of a dataset replaced): first a journal naming both, then the moves.

    A build killed during the moves is finished by :func:`finish_commit` on the next run, so
    ``out`` never keeps a mix of two builds; a build that fails before the journal leaves ``out``
    exactly as it was.
    """
    names = sorted(p.name for p in stage.iterdir() if p.is_file() and p.name != JOURNAL)
    names.sort(key=lambda n: n == LAST)
    write_json(stage / JOURNAL, {"files": names, "remove": sorted(remove)})
    finish_commit(stage, out)


def fresh_stage(out: Path) -> Path:
    """An empty staging directory in ``out`` for outputs to be committed together."""
    stage = out / STAGING
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def finish_interrupted(out: Path) -> bool:
    """Finish the commit a killed command left in ``out`` (or drop an unjournaled stage);
    True when files were moved."""
    return finish_commit(out / STAGING, out)


def finish_commit(stage: Path, out: Path) -> bool:
    """Complete a journaled commit, or drop an unjournaled (unfinished) staging directory.
    Returns True when a commit was completed."""
    journal = stage / JOURNAL
    if not journal.exists():
        shutil.rmtree(stage, ignore_errors=True)
        return False
    record = read_json(journal)
    for i, name in enumerate(record["files"]):
        if (stage / name).exists():
            os.replace(stage / name, out / name)
        if i == 0:
            faults.checkpoint("commit")
    for name in record.get("remove", []):
        (out / name).unlink(missing_ok=True)
    journal.unlink()
    shutil.rmtree(stage, ignore_errors=True)
    return True
