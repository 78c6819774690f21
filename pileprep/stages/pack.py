"""The pack stage: merge token parts, in global ``(source, line)`` order, into the final files.

Parts are already in the dataset dtype, so the ``.bin`` is a byte concatenation. It is made by an
:class:`Appender` while the build runs: each part is appended as soon as it and every part
before it are ready, and its ``.bin`` is deleted once recorded (scratch disk holds only the
parts that wait for an earlier one). A record after the parts ready together (at most about
``SYNC_BYTES``) makes it resumable. At the end the
appended file is linked into the staged outputs, the ``.idx`` is written from the parts' sizes
in two streaming passes, and the provenance table is concatenated with global ``doc`` and
``token_start`` columns. Each output is written to a temporary name and renamed only when
complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pileprep.core import atomic, faults
from pileprep.core.errors import PilePrepError
from pileprep.core.files import data_path, dataset_prefix, index_path
from pileprep.formats import indexed, provenance
from pileprep.formats.parts import TokenPart

Position = tuple[int, int]  # (shard index, partition index): the global order of parts
_CHUNK = 8 << 20
SYNC_BYTES = 256 << 20  # appended between two fsyncs and records at most (about)
RECORD_BYTES = 64 << 20  # written in place (synced by the writers) between two records


class Appender:
    """The dataset's ``.bin``, appended part by part in global order, resumable.

    ``identity`` names what the parts are made from (stage directory, shard identities,
    settings); a record of another identity, or a file shorter than its record, starts over.
    ``select(part, pos, tokens)`` may turn a part into the part to append (dropping removed
    documents); it returns ``(token bytes or None, the part as packed)``, reading the tokens
    only when ``tokens`` is true. Parts already appended by an earlier run are still given to
    ``add`` (their ``.bin`` may be gone): only their description is kept.
    """

    def __init__(self, workdir: Path, identity, keep_work: bool,
                 select: Callable[[TokenPart, Position, bool], tuple[bytes | None, TokenPart]]
                 | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.path, self.record = workdir / "packed.bin", workdir / "packed.json"
        self.identity, self.keep_work = atomic_json(identity), keep_work
        self.select = select or (lambda part, pos, tokens: (_read(part.bin) if tokens else None, part))
        self.packed: dict[Position, TokenPart] = {}
        self.waiting: dict[Position, TokenPart] = {}
        self.counts: dict[int, int] = {}  # partitions of each shard, once it is read
        self.last, self.nbytes, self.sha = self._resume()
        self._recorded = self.last  # the last part the record names
        self._taken: list[TokenPart] = []  # written in place and hashed, not yet recorded
        self._taken_bytes = 0
        self.next: Position = (0, 0)  # parts the file holds already pass through unappended

    def _resume(self) -> tuple[Position | None, int, "hashlib._Hash"]:
        sha = hashlib.sha256()
        rec = _read_record(self.record)
        size = self.path.stat().st_size if self.path.exists() else -1
        if rec is None or rec.get("identity") != self.identity or size < rec["bytes"]:
            # Never truncate in place: a finished file is linked into the outputs.
            self.path.unlink(missing_ok=True)
            self.path.touch()
            return None, 0, sha
        if size > rec["bytes"]:  # an append the record does not cover (killed mid-write)
            os.truncate(self.path, rec["bytes"])
        with open(self.path, "rb") as f:
            while block := f.read(_CHUNK):
                sha.update(block)
        return (tuple(rec["last"]) if rec["last"] else None), rec["bytes"], sha

    def claims(self, pos: Position) -> bool:
        """Whether the part at ``pos`` is in the file already (its ``.bin`` may be deleted)."""
        return self.last is not None and pos <= self.last

    def add(self, pos: Position, part: TokenPart) -> None:
        self.waiting[pos] = part
        self._drain()

    def extend(self, parts: Sequence[tuple[Position, TokenPart]], counts: dict[int, int],
               select=None, sync_bytes: int = SYNC_BYTES) -> None:
        """Many parts at once, with their shards' partition counts, appended in one pass: one
        fsync and record per ``sync_bytes``, not per part (the parts appended are deleted
        then: scratch holds that many bytes twice). ``select`` as the constructor's."""
        self.waiting.update(parts)
        self.counts.update(counts)
        self._drain(select, sync_bytes)

    def shard_done(self, shard: int, partitions: int) -> None:
        self.counts[shard] = partitions
        self._drain()

    def _drain(self, select=None, sync_bytes: int = SYNC_BYTES) -> None:
        """Append every part that is next in order, in one write, one fsync and one record."""
        ready = []
        while True:
            s, k = self.next
            if s in self.counts and k >= self.counts[s]:
                self.next = (s + 1, 0)
            elif self.next in self.waiting:
                ready.append((self.next, self.waiting.pop(self.next)))
                self.next = (s, k + 1)
            else:
                break
        if ready:
            self._append(ready, select or self.select, sync_bytes)

    def _append(self, ready: list[tuple[Position, TokenPart]], select, sync_bytes: int) -> None:
        """Parts one after the other (one in memory at a time); an fsync and a record, then the
        parts' deletion, after each ``SYNC_BYTES`` and at the end: a shard that waited for an
        earlier one is appended in a few syncs, yet never sits on disk twice whole."""
        done: list[TokenPart] = []  # appended (or found appended), not yet recorded
        pending = 0  # bytes written since the last sync
        with open(self.path, "ab") as f:
            for pos, part in ready:
                if self.claims(pos):  # appended by an earlier run
                    _, self.packed[pos] = select(part, pos, False)
                else:
                    data, self.packed[pos] = select(part, pos, True)
                    append_bytes(f, data)
                    self.sha.update(data)
                    self.nbytes += len(data)
                    pending += len(data)
                    self.last = pos
                    del data
                done.append(part)
                if pending >= sync_bytes:
                    self._sync(f, done, pending)
                    done, pending = [], 0
            self._sync(f, done, pending)

    def _sync(self, f, parts: list[TokenPart], written: int, synced: bool = False) -> None:
        """Record ``written`` more bytes, then delete ``parts``; ``synced``: their writers
        synced them already (range writes), so no fsync here (one journal commit less, ~8 ms a
        record). Recorded also when only empty parts were taken (every document of a part
        removed as a duplicate): their ``.bin`` is deleted below, so the record must name them,
        or a rerun would read and tokenize their shards again."""
        if written or self.last != self._recorded:
            if written and not synced:
                f.flush()
                os.fsync(f.fileno())  # the record below must never claim bytes not on disk
            atomic.write_json(self.record, {"identity": self.identity, "last": list(self.last),
                                            "bytes": self.nbytes})
            self._recorded = self.last
            faults.checkpoint("append")  # appended and recorded; the parts' .bin not yet gone
        if not self.keep_work:
            for part in parts:
                Path(part.bin).unlink(missing_ok=True)

    def preallocate(self, total: int) -> None:
        """Make the file ``total`` bytes long (the new tail a hole, no disk used) for parts
        other processes write in place, each into its own range (a deduplicated build's parts,
        once every part's kept size is known); :meth:`take_written` then takes them in order."""
        if self.path.stat().st_size < total:
            os.truncate(self.path, total)

    def take_written(self, ready: Sequence[tuple[Position, TokenPart, TokenPart, int]],
                     final: bool = False) -> None:
        """Parts written in place into the file's next bytes, in order, each ``(position, source
        part, part as packed, bytes)``: hashed (read back from the page cache: just written),
        counted and recorded as :meth:`_append` does for what it writes itself, then their
        source ``.bin`` deleted. Recorded every ``RECORD_BYTES`` (and when ``final``), not every
        ``SYNC_BYTES``: the writers synced their ranges already, so a record costs one small
        file, and a part's ``.bin`` is deleted soon after the prefix passes it (scratch holds
        at most that much written twice). Not at every call either: a record's fsync waits for
        the journal, behind the writers' data (0.5 s of 1.6 for 820 MB in 45 records). Parts
        the file held already (an earlier run's) are only described."""
        with open(self.path, "rb") as f:
            for pos, source, packed, nbytes in ready:
                self.packed[pos] = packed
                if not self.claims(pos):
                    for k in range(self.nbytes, self.nbytes + nbytes, _CHUNK):
                        want = min(_CHUNK, self.nbytes + nbytes - k)
                        block = os.pread(f.fileno(), want, k)
                        if len(block) != want:  # the writer's range and the file disagree: a bug
                            raise PilePrepError(f"pack: {self.path} ends before {k}")
                        self.sha.update(block)
                    self.nbytes += nbytes
                    self._taken_bytes += nbytes
                    self.last = pos
                self.next = (pos[0], pos[1] + 1)
                self._taken.append(source)
            if final or self._taken_bytes >= RECORD_BYTES:
                self._sync(f, self._taken, self._taken_bytes, synced=True)
                self._taken, self._taken_bytes = [], 0

    def parts(self, shards: int) -> list[TokenPart]:
        """Every part as packed, in order, once all ``shards`` are read and appended."""
        if self.next < (shards, 0) or self.waiting:
            raise PilePrepError(f"pack: parts missing before {self.next}")  # a driver bug
        return [self.packed[p] for p in sorted(self.packed)]


def append_bytes(f, data: bytes) -> None:
    """One append to the growing ``.bin`` (a test makes it fail like a full disk)."""
    f.write(data)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _read_record(path: Path) -> dict | None:
    try:
        rec = atomic.read_json(path)
    except (FileNotFoundError, PilePrepError):
        return None
    return rec if isinstance(rec, dict) and {"identity", "last", "bytes"} <= rec.keys() else None


def atomic_json(value):
    """``value`` as it reads back from a JSON record (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


def pack(parts: Sequence[TokenPart], appender: Appender, out_dir: str | Path, name: str,
         dtype) -> dict[str, str]:
    """Write ``.bin`` (the appended file, linked), ``.idx`` and provenance; return
    ``{file name: sha256}``."""
    prefix = dataset_prefix(out_dir, name)
    hashes: dict[str, str] = {}
    count = sum(p.docs for p in parts)

    bin_path = data_path(prefix)
    expected = sum(p.tokens for p in parts) * np.dtype(dtype).itemsize
    if appender.nbytes != expected:  # every token of every part, exactly once
        raise PilePrepError(f"pack: {appender.path} holds {appender.nbytes} bytes, "
                            f"the parts {expected}")
    link_or_copy(appender.path, bin_path)
    hashes[bin_path.name] = appender.sha.hexdigest()
    idx_path = index_path(prefix)
    faults.checkpoint("pack", idx_path)
    with atomic.atomic_path(idx_path) as tmp, open(tmp, "wb") as f:
        hashes[idx_path.name] = indexed.write_index(
            f, dtype, count, lambda: (provenance.part_sizes(p.prov) for p in parts))

    prov_path = Path(out_dir) / provenance.FILE_NAME
    with atomic.atomic_path(prov_path) as tmp:
        hashes[prov_path.name] = provenance.merge([p.prov for p in parts], tmp)
    return hashes


def link_or_copy(src: Path, target: Path) -> None:
    """A hard link (no second copy on disk); a copy where the file system has none (not
    :func:`atomic.link`'s symlink: ``src`` is in the work directory, deleted after the build).
    Either way ``target`` is replaced atomically: a crash leaves the old file or the new one."""
    tmp = atomic.tmp_path(target)
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        with open(tmp, "wb") as f:
            indexed.copy_concat([src], f)
    os.replace(tmp, target)


def concat_text_files(sources: Sequence[str | Path], target: str | Path) -> str:
    """Concatenate small text files (per-shard rejects) into one, atomically; return sha256."""
    with atomic.atomic_path(target) as tmp, open(tmp, "wb") as f:
        return indexed.copy_concat(sources, f)
