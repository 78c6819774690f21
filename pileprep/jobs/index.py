"""``pileprep index``: the suffix-array index of a dataset's token stream, one Dask task per shard.

The driver makes ``suffixes.sa`` at its final size first (a sparse file: 4 bytes per token).
Each task reads its shard's tokens (whole documents, ``formats.suffix.shard_ranges``) with
``pread`` (``IndexedDataset.read_tokens``), sorts its suffixes with libdivsufsort, writes them
into the shard's own rows of ``suffixes.sa`` (a range write: shards are written in parallel and
never copied again), writes the shard's keys atomically, then its completion record
(``runner.tasks``): a killed run resumes with the shards not yet done. The driver then joins the
keys into ``keys.npy`` and writes ``index.json`` last, naming the shards and the data files they
were made from; a changed dataset (other sizes or modification times) is indexed again.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pileprep.runner.dask_runner import Runner
from pileprep.runner.tasks import Stage, Task
from pileprep.core import atomic, faults
from pileprep.core.outdir import OutputDir
from pileprep.core.config import ClusterConfig
from pileprep.core.errors import ConfigError
from pileprep.core.files import (NGRAM_KEYS, NGRAM_META, NGRAM_SUFFIXES, NGRAM_WORK, dataset_prefix,
                                 ngram_keys_part)
from pileprep.core.progress import log
from pileprep.formats import suffix
from pileprep.formats.indexed import IndexedDataset
from pileprep.formats.parts import FileResult
from pileprep.training.order import dataset_name


MANY_SHARDS = 512  # past this many shards, `index` suggests larger ones (docs/benchmarks.md)


@dataclass
class IndexShardResult(FileResult):
    """``path``: the shard's keys (its suffixes are rows of suffixes.sa)."""

    tokens: int
    last_tokens: list  # the distinct last tokens of the shard's documents (at most 2 kept)
    seconds: float


def index_shard(prefix: str, shard: int, first_doc: int, end_doc: int, start: int, end: int,
                suffixes: str, keys: str, stride: int = suffix.KEY_STRIDE) -> IndexShardResult:
    """Sort the suffixes of tokens ``start .. end-1`` (documents ``first_doc .. end_doc-1``),
    write them to rows ``start .. end-1`` of ``suffixes`` and their keys to ``keys`` (runs on a
    worker)."""
    t0 = time.monotonic()
    data = IndexedDataset(prefix)
    tokens = data.read_tokens(start, end)  # pread into one array of the shard's size: no map kept
    sa = suffix.suffix_array(tokens)
    write_rows(suffixes, start * suffix.SA_DTYPE.itemsize, sa)
    with atomic.atomic_path(keys) as tmp, open(tmp, "wb") as f:
        np.save(f, suffix.shard_keys(shard, sa, tokens, stride), allow_pickle=False)
    doc_ends = np.cumsum(np.asarray(data.sizes[first_doc:end_doc], np.int64))
    last = np.unique(tokens[doc_ends - 1]) if len(doc_ends) else np.zeros(0, np.int64)
    return IndexShardResult(keys, end - start, [int(t) for t in last[:2]], time.monotonic() - t0)


def write_rows(path: str | Path, offset: int, array: np.ndarray) -> None:
    """``array``'s bytes at byte ``offset`` of the existing file ``path`` (one range of a file
    made at its full size), every byte written or an OSError naming the file."""
    faults.checkpoint("write", path)
    fd = os.open(path, os.O_WRONLY)
    try:
        atomic.write_at(fd, np.ascontiguousarray(array).reshape(-1).view(np.uint8), offset, path)
        os.fsync(fd)  # on disk before the completion record says so, as atomic writes are
    finally:
        os.close(fd)


def build_index(out_dir: str | Path, cluster: ClusterConfig, shard_tokens: int | None = None,
                quiet: bool = False, key_stride: int = suffix.KEY_STRIDE) -> dict:
    """Index ``out_dir``'s dataset (reusing finished shards); return ``index.json``'s record,
    with this run's ``wall_seconds``. (``key_stride``: rows per key; tests make it small.)"""
    cluster.validate()
    with OutputDir(out_dir, "index", quiet):
        return _build_index(out_dir, cluster, shard_tokens, quiet, key_stride)


def _build_index(out_dir: str | Path, cluster: ClusterConfig, shard_tokens: int | None,
                 quiet: bool, key_stride: int) -> dict:
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
        if (meta.get("data") == identity and meta.get("shard_tokens") == shard_tokens
                and meta.get("version") == suffix.VERSION and meta.get("key_stride") == key_stride):
            log(f"index: {folder} is up to date", quiet)
            return {**meta, "wall_seconds": 0.0, "reused": True}
        meta_path.unlink()  # the index is being rebuilt: unfinished until the new record
    for old in folder.glob("shard-*.sa"):  # a version 1 index's files: gone before the new
        old.unlink()
    ranges = suffix.shard_ranges(data.sizes, shard_tokens)
    if len(ranges) > 1 << (64 - suffix.KEY_BITS):
        raise ConfigError(f"--shard-tokens {shard_tokens:,} cuts the dataset into {len(ranges):,} "
                          f"shards; an index holds at most {1 << (64 - suffix.KEY_BITS):,}")
    if len(ranges) > MANY_SHARDS:
        most = suffix.SORT_BYTES // data.dtype.itemsize - 1
        log(f"index: {len(ranges):,} shards of at most {shard_tokens:,} tokens; lookups search "
            f"every shard, so larger ones (--shard-tokens up to {most:,}) answer several times "
            "faster, for more memory per sorting worker", quiet)
    work = folder / NGRAM_WORK
    suffixes = folder / NGRAM_SUFFIXES
    _make_suffix_file(suffixes, ranges[-1][3] * suffix.SA_DTYPE.itemsize, work)
    tasks = [Task(name=f"index-{i}", stage=Stage.INDEX, fn=index_shard,
                  kwargs=dict(prefix=str(prefix), shard=i, first_doc=d0, end_doc=d1, start=t0,
                              end=t1, suffixes=str(suffixes), keys=str(work / ngram_keys_part(i)),
                              stride=key_stride),
                  done=work / f"shard-{i:05d}.done.json",
                  inputs={"data": identity, "range": [d0, d1, t0, t1], "version": suffix.VERSION,
                          "key_stride": key_stride},
                  result_type=IndexShardResult, weight=(t1 - t0) * data.dtype.itemsize)
             for i, (d0, d1, t0, t1) in enumerate(ranges)]
    t0 = time.monotonic()
    with Runner(cluster, quiet) as runner:
        results = runner.run(tasks, "index")
    _join_keys([r.path for r in results], folder / NGRAM_KEYS)
    wall = time.monotonic() - t0
    last = sorted({t for r in results for t in r.last_tokens})
    meta = {"format": suffix.FORMAT, "version": suffix.VERSION, "dtype": data.dtype.name,
            "documents": len(data), "tokens": ranges[-1][3], "shard_tokens": shard_tokens,
            "key_stride": key_stride, "last_token": last[0] if len(last) == 1 else None,
            "data": identity,
            "bytes": suffixes.stat().st_size + (folder / NGRAM_KEYS).stat().st_size,
            "task_seconds": round(sum(r.seconds for r in results), 3),
            "shards": [suffix.Shard(d0, d1, a, b).to_json() for d0, d1, a, b in ranges]}
    atomic.write_json(meta_path, meta)
    shutil.rmtree(work, ignore_errors=True)
    return {**meta, "wall_seconds": wall, "reused": False}


def _make_suffix_file(path: Path, size: int, work: Path) -> None:
    """``suffixes.sa`` at its final size. A file of another size (another dataset, an
    interrupted run of other settings) is made again, and the shards' records with it; one of
    the right size keeps the rows the recorded shards wrote."""
    if path.exists() and path.stat().st_size == size and work.exists():
        return
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tmp = atomic.tmp_path(path)
    with open(tmp, "wb") as f:
        f.truncate(size)  # sparse, no data written yet: the tasks fill it
    os.replace(tmp, path)


def _join_keys(parts: list[str], target: Path) -> None:
    """The shards' keys, in shard order, as one ``.npy`` (already sorted: a shard's keys carry
    its number above the tokens)."""
    arrays = [np.load(p, mmap_mode="r") for p in parts]
    total = sum(len(a) for a in arrays)
    with atomic.atomic_path(target) as tmp:
        out = np.lib.format.open_memmap(tmp, "w+", np.uint64, (total,))
        at = 0
        for a in arrays:
            out[at:at + len(a)] = a
            at += len(a)
        out.flush()
        del out
