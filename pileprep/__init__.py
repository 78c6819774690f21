"""pileprep: rebuild the Pile (and the deduplicated Pile) as GPT-NeoX/Pythia training data.

Stages (each its own module): ``reader`` and ``ingest`` (shards -> validated partitions),
``tokenize`` (partitions -> token parts), ``pack`` (parts -> MMIDIDX ``.bin/.idx`` and the
``provenance`` table), orchestrated on Dask by ``pipeline``; ``indexed`` reads and writes the
Megatron/GPT-NeoX format; ``cli`` is the ``pileprep`` command.
"""

__version__ = "0.1.0"
