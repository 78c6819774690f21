"""The ingest stage: stream one shard into bounded partition files of validated records.

A Pile shard is one zstd stream that cannot be entered in the middle, so it is read once, in
order, and cut into partitions of about ``partition_bytes`` of JSON. Later stages work on
partitions, which makes their parallelism independent of the number or size of shards.

A partition is a parquet file with columns ``line`` (0-based line in the shard), ``text`` and
``pile_set_name``. Bad lines never reach a partition: each is written to the shard's rejects
file with its reason, or, with ``strict``, stops the build with :class:`BadRecordError`.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pileprep.stages.consumers import Inline
from pileprep.core import atomic, faults
from pileprep.core.config import ReadConfig
from pileprep.core.errors import BadRecordError, InputError, PilePrepError
from pileprep.formats.parts import PARTITION_SCHEMA, Partition, Records, ShardResult
from pileprep.sources import BadRecord, Shard, ShardError, records

_DETAIL_CHARS = 300
PROGRESS_SECONDS = 2.0  # how often a shard being read says how far it got
# Partitions of one shard that may wait for their readers before its read pauses: a shard is
# read faster than it is tokenized, and on a node with as many cores as shards every shard's
# text would otherwise land on scratch disk before much of it is tokenized.
READ_AHEAD = 8


def announcement(workdir: Path, file_stem: str, index: int) -> Path:
    """The record saying partition ``index`` of a shard is complete: the driver polls for it
    and starts tokenizing the partition while the rest of the shard is still read."""
    return workdir / f"{file_stem}.{index:05d}.part.json"


def reading_record(workdir: Path, file_stem: str) -> Path:
    """Bytes of the shard read so far and its size, rewritten while it is read."""
    return workdir / f"{file_stem}.reading.json"


class _PartitionWriter:
    """Append records to the current partition, one small row group at a time; or, when the
    partition is consumed inline, hold them until it is complete and hand them to its consumers.

    Memory is bounded by ``ROW_GROUP_BYTES`` whatever the partition size for a written
    partition: records are buffered only until a row group is full, then written to the open
    partition file. An inline partition holds its ``partition_bytes`` of text in memory.
    """

    ROW_GROUP_BYTES = 4 << 20

    def __init__(self, workdir: Path, source: str, stem: str, shard_index: int, limit: int,
                 read_ahead: int = 0, inline: Inline | None = None, stop: str | None = None):
        self.workdir, self.source, self.stem = workdir, source, stem
        self.shard_index, self.limit, self.read_ahead = shard_index, limit, read_ahead
        self.inline, self.held, self.stop = inline, False, stop
        self.inline_cpu: dict[str, float] = {}  # by stage: consumers run inline
        self.inline_reused: dict[str, int] = {}  # by stage: found finished by an earlier run
        self.done: list[Partition] = []
        self._file = self._writer = None
        self._rows = self._bytes = 0
        self._first_line = 0
        self._reset_buffer()

    def _reset_buffer(self) -> None:
        self.buffer = Records()  # the records not yet in a row group (or held, inline)
        self.buffered = 0

    def add(self, line: int, text: str, subset: str, raw_len: int) -> None:
        buf = self.buffer
        if self._rows == 0 and not buf.lines:
            self._first_line = line
            self.held = self.inline is not None and self.inline.now()
        buf.lines.append(line)
        buf.texts.append(text)
        buf.subsets.append(subset)
        self.buffered += raw_len
        # One rule for held and written partitions: a partition ends with the record that
        # brings it to ``limit`` bytes. Where it ends must not depend on who consumes it: a
        # rerun (or a retried task) may cut the shard in the other way, and reuses the records
        # of the partitions it cuts alike.
        if self._bytes + self.buffered >= self.limit:
            self.close_partition()
        elif not self.held and self.buffered >= self.ROW_GROUP_BYTES:
            self._write_group()

    def _write_group(self) -> None:
        buf = self.buffer
        if not buf.lines:
            return
        if self._writer is None:
            path = self._path(len(self.done))
            self._file = atomic.atomic_path(path)
            tmp = self._file.__enter__()
            # LZ4: the text is written once and read once or twice (tokenize, MinHash) within
            # minutes; zstd's smaller files cost more CPU to read back.
            self._writer = pq.ParquetWriter(tmp, PARTITION_SCHEMA, compression="lz4",
                                            use_dictionary=["pile_set_name"])
        table = pa.table([buf.lines, buf.texts, buf.subsets], schema=PARTITION_SCHEMA)
        self._writer.write_table(table)
        self._rows += len(buf.lines)
        self._bytes += self.buffered
        self._reset_buffer()

    def _path(self, index: int) -> Path:
        return self.workdir / f"{self.stem}.{index:05d}.parquet"

    def close_partition(self) -> None:
        if self.held:
            self._consume_held()
            return
        self._write_group()
        if self._writer is None:
            return
        self._writer.close()
        self._file.__exit__(None, None, None)
        part = Partition(str(self._path(len(self.done))), self.source, self.shard_index,
                         len(self.done), self._first_line, self._rows, self._bytes)
        if self.inline is not None and self.inline.consumed(part):
            # A retried (or resumed) read re-cut a partition whose readers all finished:
            # nobody will read or delete it. Deleted before it is announced, as the driver
            # may delete it too once it sees the announcement.
            Path(part.path).unlink(missing_ok=True)
        self._announce(part)
        if self.read_ahead:
            _wait_for_readers([p.path for p in self.done if not p.inline], self.read_ahead,
                              self.stop)
        self._file = self._writer = None
        self._rows = self._bytes = 0

    def _consume_held(self) -> None:
        records = self.buffer
        if not records.lines:
            return
        part = Partition(str(self._path(len(self.done))), self.source, self.shard_index,
                         len(self.done), self._first_line, len(records.lines), self.buffered,
                         inline=True)
        self._reset_buffer()
        self.inline.run(part, records, self.inline_cpu, self.inline_reused)
        self._announce(part)

    def _announce(self, part: Partition) -> None:
        self.done.append(part)
        atomic.write_json(announcement(self.workdir, self.stem, part.index), asdict(part))

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._file.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self._file = self._writer = None


def ingest_shard(shard: Shard, shard_index: int, workdir: str, cfg: ReadConfig,
                 read_ahead: int = 0, inline: Inline | None = None,
                 identity: dict | None = None, stop: str | None = None) -> ShardResult:
    """Read one shard into partitions; return what was read, kept and rejected.

    ``read_ahead`` > 0: pause while that many of the shard's partitions are still on disk (the
    driver deletes each once its readers finished); 0 reads on regardless (kept work files).
    ``inline``: consume partitions here instead of writing them, unless its hand-off flag is up
    (:mod:`pileprep.stages.consumers`). ``identity``: the shard's as the driver listed it (its
    work is recorded under it), else as the read starts. ``stop``: a file whose existence means
    the driver has given the run up (a failure elsewhere, Ctrl-C): the read stops at its next
    partition instead of reading the rest of the shard for nobody."""
    work = Path(workdir)
    source = shard.name
    now = _identity(shard)
    before = identity if identity is not None else now
    if now is None:
        raise InputError(f"{shard.location}: the input shard is gone (deleted or moved after "
                         "the build listed it)")
    writer = _PartitionWriter(work, source, shard.file_stem, shard_index, cfg.partition_bytes,
                              read_ahead, inline, stop)
    stream = records(shard, cfg.text_column)
    rejected: dict[str, int] = {}
    rejects = work / f"{shard.file_stem}.rejects.jsonl"
    shard_error = None
    with atomic.atomic_path(rejects) as tmp, open(tmp, "wb") as rej:
        def reject(line: int, reason: str, detail: str) -> None:
            if cfg.strict:
                raise BadRecordError(source, line, reason, detail)
            rejected[reason] = rejected.get(reason, 0) + 1
            rej.write(orjson.dumps({"source": source, "line": line, "reason": reason,
                                    "detail": detail[:_DETAIL_CHARS]}) + b"\n")

        progress = _ReadProgress(reading_record(work, shard.file_stem), stream, shard.size)
        cut = 0
        try:
            for line, rec, raw_len in stream:
                progress.tick()
                if len(writer.done) != cut:  # a partition was cut
                    cut = len(writer.done)
                    faults.checkpoint("read", shard.location)
                    check_stop(stop)
                if isinstance(rec, BadRecord):
                    reject(line, rec.reason, rec.detail)
                else:
                    writer.add(line, rec.text, rec.pile_set_name, raw_len)
        except ShardError as exc:
            if cfg.strict:
                raise BadRecordError(source, exc.line, exc.reason, exc.detail) from None
            shard_error = {"reason": exc.reason, "detail": exc.detail, "after_lines": exc.line}
        except BaseException:
            writer.abort()
            raise
        writer.close_partition()
        _check_unchanged(shard, before)  # before the rejects (and the task's record) are kept
    progress.close()
    accepted = sum(p.rows for p in writer.done)
    return ShardResult(source, shard.location, stream.size, stream.sha256, stream.lines, accepted,
                       dict(sorted(rejected.items())), str(rejects), writer.done, shard_error,
                       writer.inline_cpu, writer.inline_reused)



def _identity(shard: Shard) -> dict | None:
    """The shard's identity now; None once it is deleted."""
    try:
        return shard.identity()
    except FileNotFoundError:
        return None


def _check_unchanged(shard: Shard, before: dict) -> None:
    """Refuse a shard that was truncated, rewritten or deleted while it was read: its records
    would mix two versions (and a deleted one may have been cut short). The partitions already
    cut stay unused: the rerun reads the shard as it then is."""
    after = _identity(shard)
    if after != before:
        what = ("deleted" if after is None else
                f"cut from {before['size']:,} to {after['size']:,} bytes"
                if after.get("size") != before.get("size") else "rewritten")
        raise InputError(f"{shard.location}: the input shard was {what} while it was read; "
                         "run the build again once the input is stable")


class _ReadProgress:
    """Writes how many bytes of the shard were read, every ``PROGRESS_SECONDS``: a Pile shard
    takes minutes to read, and the driver's progress lines show it from the first seconds."""

    def __init__(self, path: Path, stream, size: int):
        self.path, self.stream, self.size = path, stream, size
        self.start = self.last = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        read = getattr(self.stream, "bytes_read", None)  # kinds that can tell, as they read
        if read is not None:
            atomic.write_json(self.path, {"read": read, "size": self.size,
                                          "seconds": round(now - self.start, 3)})

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class Stopped(PilePrepError):
    """The driver gave the run up; this task stops (nobody waits for its result)."""


def check_stop(stop: str | None) -> None:
    if stop is not None and os.path.exists(stop):
        raise Stopped(f"stopped: the run was given up ({stop})")


def _wait_for_readers(paths: list[str], limit: int, stop: str | None = None) -> None:
    """Wait until fewer than ``limit`` of these partitions remain. On a Dask worker the task
    first leaves the worker's thread pool (``secede``), so the worker runs the tokenize tasks
    that consume them meanwhile; the read goes on once the worker has a free thread again."""
    def waiting() -> int:
        return sum(os.path.exists(p) for p in paths[-2 * limit:])

    if waiting() < limit:
        return
    seceded = _secede()
    while waiting() >= limit:
        check_stop(stop)
        time.sleep(0.1)
    if seceded:
        from distributed import rejoin
        rejoin()


def _secede() -> bool:
    """Leave the Dask worker's thread pool; False outside a distributed worker."""
    try:
        from distributed import get_worker, secede
        get_worker()
    except (ImportError, ValueError):
        return False
    secede()
    return True
