"""pileprep: rebuild the Pile (and the deduplicated Pile) as GPT-NeoX/Pythia training data.

The folders follow the data: ``sources`` (inputs) -> ``tokenizer`` (engines) -> ``dedup`` ->
``formats`` (MMIDIDX, provenance, GPT-NeoX config) -> ``build`` (tasks and stages on Dask) ->
``training`` (schedule, training order, lookups) -> ``outputs`` (export, pieces, verify) ->
``cli``; ``core`` holds settings, errors, file names and atomic writes. ``pileprep.open``
(module ``api``) reads a finished build. docs/architecture.md has the import rule.
"""

from pileprep.core.version import __version__

__all__ = ["__version__", "open"]


def open(out_dir):  # noqa: A001 - mirrors the builtin on purpose: pileprep.open(OUT_DIR)
    """Open a finished build for reading; see :class:`pileprep.api.Build`."""
    from pileprep.api import open as _open

    return _open(out_dir)
