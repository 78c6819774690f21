"""pileprep: rebuild the Pile (and the deduplicated Pile) as GPT-NeoX/Pythia training data.

The folders follow the data: ``sources`` (inputs) and ``tokenizer`` (engines) over ``formats``
(MMIDIDX, provenance, manifest) and ``core`` (settings, errors, file names, atomic writes, the
output directory); ``dedup`` and ``training`` (schedule, training order, lookups, counts) as
algorithms; ``checks`` (verify) and ``outputs`` (every file a query writes); ``runner`` (tasks
on Dask), ``stages`` (ingest, tokenize, dedup, pack) and ``jobs`` (the commands that write an
output directory); ``api`` (``pileprep.open``) and ``cli``. docs/architecture.md has the rules.
"""

from pileprep.core.version import __version__

__all__ = ["__version__", "open"]


def open(out_dir):  # noqa: A001 - mirrors the builtin on purpose: pileprep.open(OUT_DIR)
    """Open a finished build for reading; see :class:`pileprep.api.Build`."""
    from pileprep.api import open as _open

    return _open(out_dir)
