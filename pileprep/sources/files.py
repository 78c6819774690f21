"""Files as inputs: find them (local paths, globs, directories, fsspec URLs), open them, and
tell whether a finished read of one is still valid."""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path
from typing import Sequence

from pileprep.core.errors import InputError


def is_url(path) -> bool:
    """``s3://…``, ``gs://…``, ``file://…``: a path for fsspec rather than the local filesystem."""
    return "://" in str(path)


def open_binary(path):
    """A local file, or a URL through fsspec (object stores need their fsspec package)."""
    if is_url(path):
        import fsspec

        return fsspec.open(str(path), "rb").open()
    return open(path, "rb")


def base_name(location: str) -> str:
    """The file name of a path or URL: what identifies its documents."""
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def size(location: str) -> int:
    return remote_info(location)[0] if is_url(location) else Path(location).stat().st_size


def identity(location: str) -> dict:
    """Size plus mtime (local) or the store's version tag (URL)."""
    if is_url(location):
        nbytes, version = remote_info(location)
        return {"size": nbytes, "version": version}
    st = Path(location).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


class FileKind:
    """What every input kind that reads files shares: its size and identity are the file's."""

    prefix = ""  # claims inputs by file name suffix, not by a spec prefix
    streamed = False

    def size(self, shard) -> int:
        return size(shard.location)

    def identity(self, shard) -> dict:
        return identity(shard.location)


def sha256(location: str) -> tuple[str, int]:
    """sha256 and size of a whole file."""
    h, n = hashlib.sha256(), 0
    with open_binary(location) as f:
        while block := f.read(1 << 22):
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


def remote_info(url: str) -> tuple[int, str]:
    """Size and a version tag (ETag, mtime, …: whatever the store reports) of a URL."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    info = fs.info(path)
    version = next((str(info[k]) for k in ("ETag", "etag", "md5", "mtime", "LastModified",
                                           "updated", "created") if info.get(k)), "")
    return int(info["size"]), version



def find(specs: Sequence[str], suffixes: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(name, location)`` of every input file the specs name (a file, a directory, a glob;
    local or a URL), keeping in directories and globs the names ending in ``suffixes``."""
    found: list[tuple[str, str]] = []
    for spec in specs:
        matches = _find_url(spec) if is_url(spec) else _find_local(spec)
        found += [(base_name(loc), loc) for loc, named in matches
                  if named or base_name(loc).endswith(suffixes)]
    return found


def _find_local(spec: str) -> list[tuple[str, bool]]:
    """``(location, named directly)``: a file named directly is kept whatever its suffix."""
    path = Path(spec)
    if path.is_dir():
        return [(str(p.resolve()), False) for p in path.iterdir() if p.is_file()]
    if path.is_file():
        return [(str(path.resolve()), True)]
    if glob.has_magic(spec):
        matches = [Path(p) for p in glob.glob(spec)]
        if not matches:
            raise InputError(f"input pattern {spec!r} matches no file")
        return [(str(p.resolve()), False) for p in matches if p.is_file()]
    raise InputError(f"input {spec!r} does not exist")


def _find_url(spec: str) -> list[tuple[str, bool]]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(spec)
        if fs.isdir(path):
            paths, named = list(fs.ls(path, detail=False)), False
        elif any(c in path for c in "*?["):
            paths, named = fs.glob(path), False
        elif fs.exists(path):
            paths, named = [path], True
        else:
            raise InputError(f"input {spec!r} does not exist")
    except (OSError, ValueError, ImportError) as exc:
        raise InputError(f"input {spec!r}: {exc}") from None
    protocol = spec.split("://", 1)[0]
    return [(f"{protocol}://{p.split('://', 1)[-1]}", named) for p in paths]
