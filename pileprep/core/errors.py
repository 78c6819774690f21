"""One error hierarchy for everything pileprep reports to a user.

Every expected failure is a :class:`PilePrepError`; the command line catches the base class once
and prints one line naming what and where (``PILEPREP_DEBUG=1`` shows the traceback instead).
The kinds say *what* went wrong, so a caller can tell a bad setting from a damaged file:

- :class:`ConfigError`: a setting or a combination of settings (checked before work starts);
- :class:`InputError`: an input that cannot be read as asked (missing, empty, unopenable);
- :class:`BadRecordError`: with ``--on-bad-record stop``, the first bad record (file and line);
- :class:`FormatError`: a file that does not follow its format (``.idx``, ``.npy``, pieces);
- :class:`IntegrityError`: a file whose bytes differ from what a checksum or manifest says;
- :class:`NotFoundError`: a document, step or schedule the dataset does not hold;
- :class:`ClusterError`: the Dask cluster failed the work (scheduler unreachable or lost, a
  task whose workers kept dying);
- :class:`TaskError`: an unexpected exception inside a task, named by its task (the traceback
  travels with it for ``PILEPREP_DEBUG=1``);
- :class:`AccountingError`: lines read do not add up (a pileprep bug, exit code 3).

Every runner (synchronous, a local cluster, a remote scheduler) hands a task's error to the
driver as the same kind with the same message: the exception crosses the cluster pickled, so
each class keeps all its constructor arguments in ``args``.
"""

from __future__ import annotations


class PilePrepError(Exception):
    """Base of every error pileprep reports in one line."""

    exit_code = 2
    label = "error"


class ConfigError(PilePrepError):
    """An invalid setting, reported before any work starts."""


class InputError(PilePrepError):
    """An input that cannot be read as asked: missing, matching nothing, or unopenable."""


class BadRecordError(InputError):
    """``--on-bad-record stop``: the first bad record, naming file and line."""

    def __init__(self, source: str, line: int, reason: str, detail: str):
        super().__init__(source, line, reason, detail)
        self.source, self.line, self.reason, self.detail = source, line, reason, detail

    def __str__(self) -> str:
        return f"{self.source}: line {self.line} (0-based): {self.reason}: {self.detail}"


class FormatError(PilePrepError):
    """A file that does not follow its format."""


class IntegrityError(PilePrepError):
    """A file whose bytes differ from its checksum, manifest or companion file."""


class NotFoundError(PilePrepError):
    """Something asked for (a document, a schedule, a build) that is not there."""


class ClusterError(PilePrepError):
    """The Dask cluster could not run the work: unreachable or lost scheduler, dying workers."""


class TaskError(PilePrepError):
    """An exception no stage expected, raised inside a task: named by the task, with the
    original traceback as text (it is not pickled across the cluster with the exception)."""

    def __init__(self, task: str, error: str, traceback: str = ""):
        super().__init__(task, error, traceback)
        self.task, self.error, self.traceback = task, error, traceback

    def __str__(self) -> str:
        return f"{self.task} failed: {self.error} (PILEPREP_DEBUG=1 shows the traceback)"


class AccountingError(PilePrepError):
    """Lines read do not add up to kept + duplicates + rejected: an internal error."""

    exit_code = 3
    label = "internal error"
