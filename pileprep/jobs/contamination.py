"""``pileprep contamination``: how much of each benchmark example the corpus holds, and from which
training step it was trained (:mod:`pileprep.training.contamination`), as Dask tasks.

The driver reads each benchmark (JSON lines, parquet, ``hf:`` datasets: the input kinds of
:mod:`pileprep.sources`, the text in ``--field``), tokenizes its examples and writes them in
chunks of ``CHUNK`` examples to the work folder; one task per chunk looks its n-grams up and
writes the chunk's rows, then its completion record, so a rerun redoes only unfinished chunks.
Memory: a chunk in each worker; the driver, the results table (a few numbers per example). Rows that are not examples (no text, not
JSON) are skipped, counted per benchmark and named by their first ``FILE:LINE`` (lines from 0,
as in provenance).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pileprep import sources
from pileprep.core import atomic, faults
from pileprep.core.config import ClusterConfig
from pileprep.core.errors import ConfigError
from pileprep.core.files import CONTAMINATION_WORK
from pileprep.core.progress import Progress
from pileprep.formats.parts import FileResult
from pileprep.formats.suffix import SuffixIndex, data_identity
from pileprep.jobs.count import work_dir
from pileprep.runner.dask_runner import Runner
from pileprep.runner.tasks import Stage, Task
from pileprep.training.contamination import contamination
from pileprep.training.order import TrainingOrder
from pileprep.training.pieces import Preshuffled
from pileprep.training.streammap import open_map

CHUNK = 1024  # examples per task


@dataclass
class Benchmark:
    """What was read of one benchmark input."""

    name: str
    examples: int = 0
    skipped: dict = field(default_factory=dict)  # reason -> [count, first "FILE:LINE"]


class ChunkRows(FileResult):
    """A task's result: ``path`` holds the chunk's rows (parquet)."""


def chunk_rows(out_dir: str, cfg, chunk: str, n: int, first_step: int, end_step: int,
               target: str) -> ChunkRows:
    """One task: the rows of one chunk of examples (runs on a worker)."""
    faults.checkpoint("contamination")
    order = TrainingOrder(out_dir, cfg)
    with np.load(chunk) as z:
        ids, ends = z["ids"], z["ends"]
        meta = json.loads(bytes(z["meta"]).decode())
    examples = [ids[a:b].tolist() for a, b in zip(np.r_[0, ends[:-1]], ends)]
    c = contamination(order, SuffixIndex(order.out_dir, order.data), examples, n, first_step, end_step)
    B = order.cfg.batch_size
    step = lambda s: pa.array(np.where(s >= 0, s // B, 0), pa.int64(), mask=s < 0)  # noqa: E731
    table = pa.table({
        "benchmark": pa.array(meta["benchmark"], pa.string()),
        "source": pa.array(meta["source"], pa.string()), "line": pa.array(meta["line"], pa.int64()),
        "tokens": np.diff(np.r_[0, ends]).astype(np.int64), "ngrams": c.ngrams,
        "in_corpus": c.in_corpus, "trained": c.trained, "first_step": step(c.first_sample),
        "verbatim_in_corpus": c.verbatim_corpus, "verbatim_first_step": step(c.verbatim_first_sample)})
    with atomic.atomic_path(target) as tmp:
        pq.write_table(table, tmp)
    return ChunkRows(target)


def measure(order: TrainingOrder, inputs: list[str], names: list[str] | None, field_name: str,
            tokenizer, n: int, first_step: int, end_step: int, cluster: ClusterConfig,
            leading_space: bool = True, quiet: bool = True) -> tuple[list[Benchmark], pa.Table]:
    """Every example of every benchmark input, one row each (see :func:`chunk_rows`), and
    what was read of each benchmark."""
    if n < 1:
        raise ConfigError(f"--ngram must be at least 1, not {n}")
    order.check_steps(first_step, end_step)
    titles = _names(inputs, names)
    shards = [sources.discover([spec]) for spec in inputs]  # a bad input: said before any work
    SuffixIndex(order.out_dir, order.data)  # a missing or outdated index too
    if not isinstance(order.schedule, Preshuffled):
        open_map(order, order.out_dir, quiet)  # made once here, not by every task at once
    settings = (inputs, field_name, n, first_step, end_step, leading_space)
    with work_dir(order, CONTAMINATION_WORK, "contamination", *settings) as work:
        benchmarks, tasks = [], []
        for i, title in enumerate(titles):
            bench = Benchmark(title)
            chunks = _chunks(shards[i], bench, field_name, tokenizer, leading_space,
                             work / f"input-{i:03d}", quiet)
            tasks += [_task(order, path, f"contamination-{i}-{k}", n, first_step, end_step)
                      for k, path in enumerate(chunks)]
            benchmarks.append(bench)
            if not bench.examples:
                break  # refused below, once the work folder is cleared
        else:
            with Runner(cluster, quiet) as runner:
                parts = runner.run(tasks, "contamination")
            return benchmarks, pa.concat_tables([pq.read_table(p.path) for p in parts])
    bench = benchmarks[-1]
    raise ConfigError(f"{inputs[len(benchmarks) - 1]}: no example with a text in {field_name!r}"
                      + "".join(f"; {c:,} row(s) {reason} (first at {where})"
                                for reason, (c, where) in bench.skipped.items()))


def _task(order: TrainingOrder, chunk: Path, name: str, n: int, first_step: int, end_step: int
          ) -> Task:
    return Task(name=name, stage=Stage.COUNT, fn=chunk_rows,
                kwargs=dict(out_dir=str(order.out_dir), cfg=order.cfg, chunk=str(chunk), n=n,
                            first_step=first_step, end_step=end_step,
                            target=str(chunk.with_suffix(".parquet"))),
                done=chunk.with_suffix(".done.json"),
                inputs={"chunk": atomic.sha256_file(chunk), "n": n, "steps": [first_step, end_step],
                        "data": data_identity(order.prefix), "cfg": asdict(order.cfg)},
                result_type=ChunkRows, weight=chunk.stat().st_size)


def _names(inputs: list[str], names: list[str] | None) -> list[str]:
    """Each input's name in the results: given, or its file (or dataset and split) name."""
    if names and len(names) != len(inputs):
        raise ConfigError(f"--name given {len(names)} times for {len(inputs)} --input")
    titles = names or [_name_of(spec) for spec in inputs]
    twice = sorted({t for t in titles if titles.count(t) > 1})
    if twice:
        raise ConfigError(f"two inputs are both named {twice[0]!r}: give each a --name")
    return titles


def _name_of(spec: str) -> str:
    path, _, split = spec.removeprefix("hf:").partition("@")
    name = Path(path.rstrip("/")).name
    for ext in (".zst", ".gz", ".jsonl", ".json", ".parquet", ".arrow"):
        name = name.removesuffix(ext)
    return name + (f"@{split}" if split else "")


def _chunks(shards: list, bench: Benchmark, field_name: str, tokenizer, leading_space: bool,
            work: Path, quiet: bool):
    """The examples of one benchmark tokenized, written ``CHUNK`` at a time; yields each file."""
    progress = Progress(f"read {bench.name}", 0, len(shards), quiet=quiet, unit="files")
    batch: list[tuple[str, int, str]] = []
    k = 0
    for shard in shards:
        for line, rec, _ in shard.reader.rows(shard, field_name):
            if isinstance(rec, sources.BadRecord):
                seen = bench.skipped.setdefault(rec.reason, [0, f"{shard.name}:{line}"])
                seen[0] += 1
                continue
            batch.append((shard.name, line, rec.text))
            if len(batch) == CHUNK:
                yield _write_chunk(batch, bench, tokenizer, leading_space, Path(f"{work}-{k:05d}.npz"))
                batch, k = [], k + 1
        progress.update(items=1)
    if batch:
        yield _write_chunk(batch, bench, tokenizer, leading_space, Path(f"{work}-{k:05d}.npz"))
    progress.close()


def _write_chunk(batch, bench: Benchmark, tokenizer, leading_space: bool, path: Path) -> Path:
    texts = [(" " + t) if leading_space else t for _, _, t in batch]
    ids = [e.ids for e in tokenizer.encode_batch(texts)]  # as `count --text` encodes a term
    meta = {"benchmark": [bench.name] * len(batch), "source": [s for s, _, _ in batch],
            "line": [ln for _, ln, _ in batch]}
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=np.array([t for x in ids for t in x], np.int64),
                 ends=np.cumsum([len(x) for x in ids]).astype(np.int64),
                 meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    bench.examples += len(batch)
    return path
