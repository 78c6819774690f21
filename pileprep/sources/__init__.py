"""Inputs: every kind of input cut into shards of records (see :mod:`.base` for the protocol).

Importing this package registers the built-in kinds: Pile JSON lines (:mod:`.jsonl`), parquet
and Arrow files (:mod:`.table`) and ``hf:`` datasets streams (:mod:`.hub`).
"""

from __future__ import annotations

from typing import Sequence

from pileprep.core.errors import InputError
from pileprep.sources import files, hub, jsonl, table  # noqa: F401 - register the kinds
from pileprep.sources.base import (KINDS, BadRecord, Record, RowStream, Shard, ShardError,
                                   file_suffixes, kind_of_file, prefix_kind)

__all__ = ["BadRecord", "Record", "RowStream", "Shard", "ShardError", "discover", "records"]


def discover(inputs: Sequence[str]) -> list[Shard]:
    """Every shard of the inputs: files (local or URLs) sorted by file name, then streamed
    sources in the order given, each cut into its stream shards.

    Sorting files by name (not by the order given) makes ``(source, line)`` a stable identity
    and the output independent of how the inputs were spelled; two inputs with one name would
    make it ambiguous, so they are an error.
    """
    if not inputs:
        raise InputError("no --input given")
    by_prefix = [(i, prefix_kind(i)) for i in inputs]
    file_specs = [i for i, k in by_prefix if k is None]
    shards = []
    for name, location in files.find(file_specs, file_suffixes()):
        # A file named directly is read as JSON lines whatever it is called.
        kind = kind_of_file(name) or KINDS["jsonl"]
        shards.append(Shard(name, location, kind.name))
    if file_specs and not shards:
        raise InputError(f"no shards ({', '.join('*' + s for s in file_suffixes())}) found in "
                         f"{', '.join(file_specs)}")
    shards.sort(key=lambda s: (s.name, s.location))
    for spec, kind in by_prefix:
        if kind is not None:
            shards += kind.expand(spec)
    names = [s.name for s in shards]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"several inputs share the name {dupes[0]!r}; documents are identified "
                         "by file name, so names must be unique")
    return shards


def records(shard: Shard, text_column: str = "text") -> RowStream:
    """The rows of one shard as records or bad records, with the rules every kind shares."""
    return KINDS[shard.kind].rows(shard, text_column)
