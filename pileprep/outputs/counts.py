"""``pileprep count --output``: one row per (query, step range), for a frequency-vs-accuracy study.

Columns: ``query`` (its number in the input), ``label`` (the text, or the ids as given),
``ids``, ``corpus`` (occurrences inside documents of the dataset), ``step_start`` and
``step_end`` (the range, end exclusive), ``samples`` and ``occurrences`` in that range (see
:mod:`pileprep.training.ngram`), both cumulated from the first range, and ``counted_by``
(``index`` or ``stream``: which exact way counted the query, :mod:`pileprep.jobs.count`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pileprep.core import atomic
from pileprep.core.errors import ConfigError
from pileprep.training.ngram import Counts


def table(counts: Counts, labels: list[str]) -> pa.Table:
    Q, bins = counts.samples.shape
    query = np.repeat(np.arange(Q), bins)
    edges = np.asarray(counts.edges, np.int64)
    return pa.table({
        "query": query,
        "label": pa.array([labels[q] for q in query.tolist()], pa.string()),
        "ids": pa.array([counts.queries[q] for q in query.tolist()], pa.list_(pa.int64())),
        "corpus": counts.corpus[query],
        "step_start": np.tile(edges[:-1], Q), "step_end": np.tile(edges[1:], Q),
        "samples": counts.samples.reshape(-1), "occurrences": counts.occurrences.reshape(-1),
        "cumulative_samples": counts.cumulative("samples").reshape(-1),
        "cumulative_occurrences": counts.cumulative("occurrences").reshape(-1),
        "counted_by": pa.array([(counts.strategy or ["index"] * Q)[q] for q in query.tolist()],
                               pa.string()),
    })


def check_target(target: str | Path) -> None:
    if not str(target).endswith(".parquet"):
        raise ConfigError(f"--output must end in .parquet, not {str(target)!r}")


def write(counts: Counts, labels: list[str], target: str | Path) -> None:
    check_target(target)
    with atomic.atomic_path(target) as tmp:
        pq.write_table(table(counts, labels), tmp, compression="zstd")
