"""``pileprep contamination``'s results: the table of examples, the summary per benchmark, and
the chart of contaminated examples over the training steps.

Table columns (one row per example): ``benchmark``, ``source`` and ``line`` (where the example
was read, line from 0), ``tokens``, ``ngrams`` (windows of ``--ngram`` tokens), ``in_corpus``
(those the corpus holds), ``trained`` (those inside trained samples of the step range),
``first_step`` (the first step that trained any, null for none), ``verbatim_in_corpus`` (the
whole example's occurrences inside documents) and ``verbatim_first_step``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pileprep.core import atomic
from pileprep.core.errors import ConfigError
from pileprep.formats import charts


def check_target(target: str | Path, suffix: str, flag: str) -> None:
    """Refuse, before any work, a target that could not be written at the end."""
    if not str(target).endswith(suffix):
        raise ConfigError(f"{flag} must end in {suffix}, not {str(target)!r}")
    if not Path(target).resolve().parent.is_dir():
        raise ConfigError(f"{flag} {target}: the folder {Path(target).parent} does not exist")


def write(table: pa.Table, target: str | Path) -> None:
    check_target(target, ".parquet", "--output")
    with atomic.atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def summary(benchmarks, table: pa.Table) -> list[dict]:
    """Per benchmark: examples, skipped rows, and how many examples have any n-gram in the
    corpus, any trained, and occur whole in the corpus and trained."""
    out = []
    for b in benchmarks:
        rows = table.filter(pc.equal(table["benchmark"], b.name))
        count = lambda mask: int(pc.sum(mask).as_py() or 0)  # noqa: E731
        out.append({
            "benchmark": b.name, "examples": rows.num_rows,
            "skipped": {reason: {"rows": n, "first": where} for reason, (n, where) in b.skipped.items()},
            "any_ngram_in_corpus": count(pc.greater(rows["in_corpus"], 0)),
            "any_ngram_trained": count(pc.is_valid(rows["first_step"])),
            "verbatim_in_corpus": count(pc.greater(rows["verbatim_in_corpus"], 0)),
            "verbatim_trained": count(pc.is_valid(rows["verbatim_first_step"])),
        })
    return out


def write_summary(rows: list[dict], target: str | Path) -> None:
    atomic.write_json(target, {"benchmarks": rows})


def plot(table: pa.Table, names: list[str], edges: list[int], path: str | Path, title: str) -> None:
    """Per benchmark, examples with any n-gram trained by the end of each step range."""
    check_target(path, ".png", "--plot")
    curves = []
    for name in names:
        rows = table.filter(pc.equal(table["benchmark"], name))
        first = rows["first_step"].drop_null().to_numpy(zero_copy_only=False)
        curves.append(np.searchsorted(np.sort(first), np.asarray(edges[1:]), side="left"))
    charts.term_frequency(edges, np.array(curves).reshape(len(names), -1), names, Path(path), title,
                          ylabel="examples with a trained n-gram (cumulative)")
