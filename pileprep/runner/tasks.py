"""The one task model every stage uses: a function of files to files, with a completion record.

A :class:`Task` names its function and arguments, the completion record the worker writes after
the task's outputs, and ``inputs``: a JSON-able identity of what the outputs are made from (the
shard's size and mtime, the part's sha256, the settings). A later run reuses a task whose record
holds the same ``inputs`` and whose output files still exist, and redoes every other one. So a
build killed at any point resumes from the finished tasks, and a changed input or setting
redoes exactly the work that depends on it.

Results are small: counts and paths, JSON in the record. A ``result_type`` (a value class of
:mod:`pileprep.formats.parts`) is rebuilt from the record with ``from_json`` and names its files
with ``outputs()``.
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from pileprep.core import atomic, faults
from pileprep.core.errors import FormatError, PilePrepError, TaskError


class Stage(enum.StrEnum):
    """What a task belongs to: progress lines, CPU accounting, fault points, task priority."""

    INGEST = "ingest"
    TOKENIZE = "tokenize"
    DEDUP = "dedup"
    INDEX = "index"
    ALIGN = "align"
    COMPARE = "compare"
    COUNT = "count"


@dataclass(frozen=True, kw_only=True)
class Task:
    name: str  # unique in a run: the Dask key and log lines use it
    stage: Stage
    fn: Callable[..., Any]
    kwargs: dict = field(default_factory=dict)  # fn's arguments, by name
    done: Path  # completion record, written by the worker after the outputs
    inputs: Any = None  # what the outputs are made from; a record with other inputs is redone
    result_type: type | None = None  # has from_json/to_json/outputs; else the result is JSON
    weight: int = 0  # bytes of input, for progress lines (0: counted in tasks)
    order: int = 0  # within its stage, lower runs first (the parts' place in the dataset)

    def finished(self, consumed: Callable[[Any, str], bool] | None = None) -> Any | None:
        """The result of an earlier run of this task that is still valid, or None.

        An output file that is gone still counts when ``consumed(result, path)`` says every task
        that reads it has finished: intermediates are deleted once consumed, to bound scratch
        disk, and a finished consumer's record is then what makes the work reusable."""
        if not self.done.exists():
            return None
        try:
            record = atomic.read_json(self.done)
        except FormatError:  # a damaged record: the task is redone
            return None
        if not isinstance(record, dict) or record.get("inputs") != _as_json(self.inputs):
            return None
        result = self._decode(record.get("result"))
        outputs = result.outputs() if hasattr(result, "outputs") else []
        return result if all(Path(p).exists() or (consumed is not None and consumed(result, p))
                             for p in outputs) else None

    def _decode(self, obj: Any) -> Any:
        return self.result_type.from_json(obj) if self.result_type is not None else obj


def execute_timed(task: Task) -> tuple[Any, float]:
    """Run the task (on a worker), then write its completion record; return the result and
    the CPU seconds of the task's function (per-stage rates per core: on a shared machine wall
    time would count the other users' processes too). The thread's, not the process's: a
    worker may run a second task in another thread while a read waits (ingest.READ_AHEAD)."""
    start = time.thread_time()
    with task_errors(task.name):
        result = task.fn(**task.kwargs)
        seconds = time.thread_time() - start
        faults.checkpoint(task.stage)
    encoded = result.to_json() if hasattr(result, "to_json") else result
    atomic.write_json(task.done, {"inputs": _as_json(task.inputs), "result": encoded})
    return result, seconds


@contextlib.contextmanager
def task_errors(name: str) -> Iterator[None]:
    """Raise what the block raises as :func:`as_task_error` reports it for task ``name``."""
    try:
        yield
    except Exception as exc:
        error = as_task_error(name, exc)
        if error is exc:
            raise
        raise error from exc


def as_task_error(name: str, exc: BaseException) -> BaseException:
    """What the driver reports for an exception raised in task ``name``: an expected error as it
    is (it already says what and where), an unexpected one as a :class:`TaskError` naming the
    task, whichever runner ran it. An OSError that names its file is expected (disk full,
    permission, a vanished input); one that does not gets the task's name."""
    if isinstance(exc, PilePrepError) or (isinstance(exc, OSError) and exc.filename):
        return exc
    tb = f"the traceback of {name}, where it ran:\n" + "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__))
    return TaskError(name, f"{type(exc).__name__}: {exc}".rstrip(": "), tb)


def _as_json(value: Any) -> Any:
    """The value as it reads back from a record (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value, default=str))
