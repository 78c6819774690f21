"""pileprep: rebuild the Pile (and the deduplicated Pile) as GPT-NeoX/Pythia training data.

Stages (each its own module): ``reader`` and ``ingest`` (shards -> validated partitions),
``dedup`` (near-duplicate removal), ``tokenize`` (partitions -> token parts), ``pack`` (parts ->
MMIDIDX ``.bin/.idx`` and the ``provenance`` table), ``schedule`` (GPT-NeoX's training order),
orchestrated on Dask by ``pipeline``; ``cli`` is the ``pileprep`` command. ``pileprep.open``
(module ``api``) reads a finished build.
"""

__version__ = "0.1.0"


def open(out_dir):  # noqa: A001 - mirrors the builtin on purpose: pileprep.open(OUT_DIR)
    """Open a finished build for reading; see :class:`pileprep.api.Build`."""
    from .api import open as _open

    return _open(out_dir)
