"""``pileprep index``: the suffix-array index of a dataset's token stream, one Dask task per shard.

Each task reads its shard's tokens (whole documents, ``formats.suffix.shard_ranges``) with
``pread`` (``IndexedDataset.read_tokens``), sorts its suffixes with libdivsufsort and writes
``shard-NNNNN.sa`` atomically, then its completion record (``runner.tasks``): a killed run
resumes with the shards not yet done.
``index.json`` is written last, naming the shards and the data files they were made from; a
changed dataset (other sizes or modification times) is indexed again.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pileprep.runner.dask_runner import Runner
from pileprep.runner.tasks import Stage, Task
from pileprep.core import atomic
from pileprep.core.outdir import OutputDir
from pileprep.core.config import ClusterConfig
from pileprep.core.errors import ConfigError
from pileprep.core.files import NGRAM_META, NGRAM_WORK, dataset_prefix, ngram_shard
from pileprep.core.progress import log
from pileprep.formats import suffix
from pileprep.formats.indexed import IndexedDataset
from pileprep.training.order import dataset_name


@dataclass
class IndexShardResult:
    path: str
    tokens: int
    last_tokens: list  # the distinct last tokens of the shard's documents (at most 2 kept)
    seconds: float

    def outputs(self) -> list[str]:
        return [self.path]

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, obj: dict) -> "IndexShardResult":
        return cls(**obj)


def index_shard(prefix: str, first_doc: int, end_doc: int, start: int, end: int,
                target: str) -> IndexShardResult:
    """Sort the suffixes of tokens ``start .. end-1`` (documents ``first_doc .. end_doc-1``)
    and write them to ``target`` (runs on a worker)."""
    t0 = time.monotonic()
    data = IndexedDataset(prefix)
    tokens = data.read_tokens(start, end)  # pread into one array of the shard's size: no map kept
    sa = suffix.suffix_array(tokens)
    with atomic.atomic_path(target) as tmp:
        sa.tofile(tmp)
    doc_ends = np.cumsum(np.asarray(data.sizes[first_doc:end_doc], np.int64))
    last = np.unique(tokens[doc_ends - 1]) if len(doc_ends) else np.zeros(0, np.int64)
    return IndexShardResult(target, end - start, [int(t) for t in last[:2]], time.monotonic() - t0)


def build_index(out_dir: str | Path, cluster: ClusterConfig, shard_tokens: int | None = None,
                quiet: bool = False) -> dict:
    """Index ``out_dir``'s dataset (reusing finished shards); return ``index.json``'s record,
    with this run's ``wall_seconds``."""
    cluster.validate()
    with OutputDir(out_dir, "index", quiet):
        return _build_index(out_dir, cluster, shard_tokens, quiet)


def _build_index(out_dir: str | Path, cluster: ClusterConfig, shard_tokens: int | None,
                 quiet: bool) -> dict:
    prefix = dataset_prefix(out_dir, dataset_name(out_dir))
    data = IndexedDataset(prefix)
    shard_tokens = suffix.shard_budget(shard_tokens, data.dtype)
    if not len(data):
        raise ConfigError(f"{out_dir}: the dataset has no documents to index")
    folder = suffix.index_dir(out_dir)
    identity = suffix.data_identity(prefix)
    meta_path = folder / NGRAM_META
    if meta_path.exists():
        meta = atomic.read_json(meta_path)
        if meta.get("data") == identity and meta.get("shard_tokens") == shard_tokens:
            log(f"index: {folder} is up to date", quiet)
            return {**meta, "wall_seconds": 0.0, "reused": True}
        meta_path.unlink()  # the index is being rebuilt: unfinished until the new record
    ranges = suffix.shard_ranges(data.sizes, shard_tokens)
    work = folder / NGRAM_WORK
    work.mkdir(parents=True, exist_ok=True)
    tasks = [Task(name=f"index-{i}", stage=Stage.INDEX, fn=index_shard,
                  kwargs=dict(prefix=str(prefix), first_doc=d0, end_doc=d1, start=t0, end=t1,
                              target=str(folder / ngram_shard(i))),
                  done=work / f"shard-{i:05d}.done.json",
                  inputs={"data": identity, "range": [d0, d1, t0, t1], "version": suffix.VERSION},
                  result_type=IndexShardResult, weight=(t1 - t0) * data.dtype.itemsize)
             for i, (d0, d1, t0, t1) in enumerate(ranges)]
    t0 = time.monotonic()
    with Runner(cluster, quiet) as runner:
        results = runner.run(tasks, "index")
    wall = time.monotonic() - t0
    _remove_stale(folder, len(ranges))
    last = sorted({t for r in results for t in r.last_tokens})
    meta = {"format": suffix.FORMAT, "version": suffix.VERSION, "dtype": data.dtype.name,
            "documents": len(data), "tokens": ranges[-1][3], "shard_tokens": shard_tokens,
            "last_token": last[0] if len(last) == 1 else None, "data": identity,
            "bytes": sum(Path(r.path).stat().st_size for r in results),
            "task_seconds": round(sum(r.seconds for r in results), 3),
            "shards": [suffix.Shard(ngram_shard(i), d0, d1, a, b).to_json()
                       for i, (d0, d1, a, b) in enumerate(ranges)]}
    atomic.write_json(meta_path, meta)
    shutil.rmtree(work, ignore_errors=True)
    return {**meta, "wall_seconds": wall, "reused": False}


def _remove_stale(folder: Path, shards: int) -> None:
    """Shard files of an earlier index with more shards."""
    keep = {ngram_shard(i) for i in range(shards)}
    for p in folder.glob("shard-*.sa"):
        if p.name not in keep:
            p.unlink()
