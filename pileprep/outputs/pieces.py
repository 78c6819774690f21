"""Split a build into upload-sized pieces with checksums, and put it back together.

``split(OUT_DIR, DEST, max_size)`` copies every file of the build into DEST; a file larger than
``max_size`` becomes ``NAME.part-00000-of-00012`` … pieces of at most ``max_size`` bytes. DEST
gets ``SHA256SUMS`` (the ``sha256sum`` format, one line per piece, so ``sha256sum -c
SHA256SUMS`` checks a download with standard tools) and ``pieces.json`` (which pieces make
which file, and each whole file's size and sha256). A file that is a link to another (a schedule
under GPT-NeoX v1.0's name) is recorded as such and not copied. ``join(DEST, OUT)`` checks
every piece, joins them, checks every whole file, writes each file atomically, and recreates
the links.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable

from pileprep.core import atomic
from pileprep.core.outdir import OutputDir
from pileprep.core.errors import ConfigError, FormatError, IntegrityError, NotFoundError
from pileprep.core.files import MANIFEST, PIECES_SUFFIX, STAGING, WORK_DIR

SUMS = "SHA256SUMS"
PIECES = "pieces.json"
_BLOCK = 1 << 22
_SKIP = {WORK_DIR, STAGING}


def _files(out_dir: Path) -> list[Path]:
    if not (out_dir / MANIFEST).exists():
        raise NotFoundError(f"{out_dir} holds no finished pileprep build (no {MANIFEST})")
    listed = sorted(out_dir.glob("*" + PIECES_SUFFIX))
    if listed:  # its tokens live outside out_dir: pieces of it would hold no tokens
        raise ConfigError(f"{out_dir} reads a published dataset's pieces in place ({listed[0].name}); "
                          "split the published pieces themselves, or adopt with --copy first")
    return sorted(p for p in out_dir.iterdir() if p.is_file() and p.name not in _SKIP
                  and not p.name.startswith("."))


def _copy_range(src, dst: Path, length: int, whole) -> str:
    """Copy ``length`` bytes from the open file ``src`` into ``dst`` atomically, feeding the
    whole file's hash too; return the piece's sha256."""
    h = hashlib.sha256()
    with atomic.atomic_path(dst) as tmp, open(tmp, "wb") as f:
        left = length
        while left:
            block = src.read(min(_BLOCK, left))
            if not block:
                raise IntegrityError(f"{dst.name}: source ended early")
            h.update(block)
            whole.update(block)
            f.write(block)
            left -= len(block)
    return h.hexdigest()


def _piece_names(name: str, count: int) -> list[str]:
    if count == 1:
        return [name]
    width = max(5, len(str(count)))
    return [f"{name}.part-{i:0{width}d}-of-{count:0{width}d}" for i in range(count)]


def split(out_dir: str | Path, dest: str | Path, max_size: int,
          progress: Callable[[str], None] = lambda _: None) -> dict:
    """Write the pieces, ``SHA256SUMS`` and ``pieces.json``; return the pieces description."""
    if max_size < 1:
        raise ConfigError("--max-size must be positive")
    out_dir, dest = Path(out_dir), Path(dest)
    if dest.resolve() == out_dir.resolve():
        raise ConfigError("the destination must differ from the build directory")
    dest.mkdir(parents=True, exist_ok=True)
    files, sums = {}, []
    seen: dict[tuple[int, int], str] = {}  # (device, inode) -> the first name of those bytes
    for path in _files(out_dir):
        st = path.stat()
        same = seen.setdefault((st.st_dev, st.st_ino), path.name)
        if same != path.name:  # a link (a schedule under another naming): no second copy
            files[path.name] = {"bytes": st.st_size, "link_to": same}
            continue
        size = st.st_size
        names = _piece_names(path.name, max(1, -(-size // max_size)))
        whole = hashlib.sha256()
        entries = []
        with open(path, "rb") as src:
            for i, name in enumerate(names):
                length = min(max_size, size - i * max_size)
                start = src.tell()
                digest = _copy_range(src, dest / name, length, whole)
                entries.append({"name": name, "offset": start, "bytes": length, "sha256": digest})
                sums.append(f"{digest}  {name}")
                progress(name)
        files[path.name] = {"bytes": size, "sha256": whole.hexdigest(), "pieces": entries}
    description = {"max_size": max_size, "files": files}
    atomic.write_json(dest / PIECES, description)
    atomic.write_bytes(dest / SUMS, ("\n".join(sums) + "\n").encode())
    return description


def _check_sums(src: Path) -> dict[str, str]:
    sums = {}
    for i, line in enumerate((src / SUMS).read_text().splitlines()):
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not m:
            raise FormatError(f"{src / SUMS}: line {i + 1} is not '<sha256>  <name>'")
        sums[m.group(2)] = m.group(1)
    return sums


def join(src: str | Path, out_dir: str | Path,
            progress: Callable[[str], None] = lambda _: None) -> list[str]:
    """Check and join the pieces in ``src`` into ``out_dir``; return the files written."""
    src, out_dir = Path(src), Path(out_dir)
    for needed in (PIECES, SUMS):
        if not (src / needed).exists():
            raise NotFoundError(f"{src} has no {needed}: not made by `pileprep split`")
    sums = _check_sums(src)
    files = atomic.read_json(src / PIECES)["files"]
    with OutputDir(out_dir, "join") as out:
        out.guard(lambda old: False, False, "a dataset already")
        stage = out.stage()
        _join_files(src, stage, files, sums, progress)
        out.commit(stage, None)  # every file, the manifest last
    return sorted(files)


def _join_files(src: Path, stage: Path, files: dict, sums: dict[str, str],
                progress: Callable[[str], None]) -> None:
    for name, info in files.items():
        if "link_to" in info:
            continue
        whole = hashlib.sha256()
        with atomic.atomic_path(stage / name) as tmp, open(tmp, "wb") as f:
            for piece in info["pieces"]:
                path = src / piece["name"]
                if not path.exists():
                    raise NotFoundError(f"missing piece {path}")
                h = hashlib.sha256()
                with open(path, "rb") as inp:
                    while block := inp.read(_BLOCK):
                        h.update(block)
                        whole.update(block)
                        f.write(block)
                if h.hexdigest() != piece["sha256"] or sums.get(piece["name"]) != piece["sha256"]:
                    raise IntegrityError(f"{path}: sha256 mismatch (damaged or incomplete download)")
                progress(piece["name"])
            if f.tell() != info["bytes"] or whole.hexdigest() != info["sha256"]:
                raise IntegrityError(f"{name}: the joined file does not match its sha256")
    for name, info in files.items():
        if "link_to" in info:
            atomic.link(stage / info["link_to"], stage / name)
