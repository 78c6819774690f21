"""Provenance by content: find each document of an adopted dataset among raw documents.

Pythia's deduplication cannot be re-run (its details were never published), so the only way to
name the source of a deduplicated model's tokens is to match the published documents against
raw text by content. Each raw document is tokenized exactly as the dataset was (the tokenizer's
ids, plus EOD when the dataset's documents end with it) and both sides are hashed (64-bit BLAKE2b
of the ids). The join runs as Dask tasks over a disk shuffle (:mod:`pileprep.dedup.shuffle`):

    dataset documents, in ranges --hash--> rows (hash, doc)          --bucket by hash-->
    raw token parts                --hash--> rows (hash, gid, source…) --bucket by hash-->
    one task per bucket: equal hashes, confirmed by comparing the ids --> matches by doc

so no process holds more than one bucket, whatever the dataset's or the raw text's size. A
document whose ids equal several raw documents' is ``ambiguous`` (``candidates`` of them; the
first in ``(source, line)`` order is named); one with none is ``none``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pileprep.core import atomic
from pileprep.core.config import BuildConfig, fingerprint
from pileprep.core.errors import ConfigError, NotFoundError
from pileprep.core.files import MANIFEST, PROVENANCE, REPORT, WORK_DIR, dataset_prefix
from pileprep.core.outdir import OutputDir
from pileprep.formats.manifest import Manifest, entry
from pileprep.runner.dask_runner import Runner
from pileprep.runner.tasks import Stage, Task
from pileprep.stages.graph import run_ingest_and_tokenize, tokenizer_identity
from pileprep.training.order import preshuffled
from pileprep.core.progress import log
from pileprep.dedup import shuffle
from pileprep.formats import indexed, provenance
from pileprep.formats.parts import TokenPart
from pileprep.sources import discover
from pileprep.tokenizer import TokenizerInfo, resolve_engine

ALIGN_FORMAT = 1
DOCS_PER_TASK = 1 << 20  # dataset documents hashed by one task
BUCKET_ROWS = 1 << 21  # rows (both sides) per join bucket: ~100 MB in memory
LOW_MATCH = 0.05  # below this share of matched documents, the report warns
_MERGE_ROWS = 1 << 16  # provenance rows merged at once (Python objects: ~60 MB)
DS_ROW = np.dtype([("hash", "<u8"), ("doc", "<i8")])
RAW_ROW = np.dtype([("hash", "<u8"), ("gid", "<i8"), ("part", "<i4"), ("offset", "<i8"),
                    ("ntok", "<i4"), ("shard", "<i4"), ("line", "<i8"), ("subset", "<i4"),
                    ("nbytes", "<i8")])
MATCH_ROW = np.dtype([("doc", "<i8"), ("gid", "<i8"), ("shard", "<i4"), ("line", "<i8"),
                      ("subset", "<i4"), ("nbytes", "<i8"), ("candidates", "<i4")])


def ids_hash(ids: np.ndarray) -> int:
    """The content key of a document: its ids as int64, whatever the file's dtype."""
    digest = hashlib.blake2b(np.asarray(ids, "<i8").tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


# -- tasks (run on workers) ----------------------------------------------------------------------

def hash_dataset_task(prefix: str, lo: int, hi: int, n_buckets: int, out_prefix: str) -> int:
    ds = indexed.IndexedDataset(prefix)
    rows = np.zeros(hi - lo, DS_ROW)
    rows["doc"] = np.arange(lo, hi)
    rows["hash"] = [ids_hash(ds.read(i)) for i in range(lo, hi)]  # read, not mapped: flat RSS
    return shuffle.write(out_prefix, rows, (rows["hash"] % np.uint64(n_buckets)).astype(np.int64), n_buckets)


def hash_raw_task(part: TokenPart, part_no: int, gid0: int, shard_no: int, subsets: list[str],
                  dtype: str, n_buckets: int, out_prefix: str) -> int:
    prov = pq.read_table(part.prov, columns=["line", "pile_set_name", "tokens", "bytes"])
    sizes = prov.column("tokens").to_numpy().astype(np.int64)
    tokens = np.fromfile(part.bin, dtype=np.dtype(dtype))
    code = {name: i for i, name in enumerate(subsets)}
    rows = np.zeros(len(sizes), RAW_ROW)
    starts = np.cumsum(sizes) - sizes
    rows["hash"] = [ids_hash(tokens[a:a + n]) for a, n in zip(starts.tolist(), sizes.tolist())]
    rows["gid"] = gid0 + np.arange(len(sizes))
    rows["part"], rows["offset"], rows["ntok"], rows["shard"] = part_no, starts, sizes, shard_no
    rows["line"] = prov.column("line").to_numpy()
    rows["subset"] = [code[s] for s in prov.column("pile_set_name").to_pylist()]
    rows["nbytes"] = prov.column("bytes").to_numpy()
    return shuffle.write(out_prefix, rows, (rows["hash"] % np.uint64(n_buckets)).astype(np.int64), n_buckets)


def join_task(k: int, ds_prefixes: list[str], raw_prefixes: list[str], dataset: str,
              part_bins: list[str], dtype: str, out_path: str) -> dict:
    """Bucket k: every dataset document with the raw documents of equal ids."""
    ds_rows = shuffle.read(ds_prefixes, k, DS_ROW)
    raw = shuffle.read(raw_prefixes, k, RAW_ROW)
    raw = raw[np.lexsort((raw["gid"], raw["hash"]))]
    data = indexed.IndexedDataset(dataset)
    width = np.dtype(dtype).itemsize

    def raw_ids(r) -> np.ndarray:  # read, not mapped: a bucket's pass leaves no pages behind
        return np.fromfile(part_bins[int(r["part"])], dtype=np.dtype(dtype), count=int(r["ntok"]),
                           offset=int(r["offset"]) * width)

    out, confirmed_raw = [], set()
    lo = np.searchsorted(raw["hash"], ds_rows["hash"], side="left")
    hi = np.searchsorted(raw["hash"], ds_rows["hash"], side="right")
    for row, a, b in zip(ds_rows, lo.tolist(), hi.tolist()):
        if a == b:
            continue
        ids = data.read(int(row["doc"]))
        same = [r for r in raw[a:b] if int(r["ntok"]) == len(ids) and np.array_equal(raw_ids(r), ids)]
        if same:
            first = same[0]  # lowest gid: first in (source, line) order
            out.append((row["doc"], first["gid"], first["shard"], first["line"], first["subset"],
                        first["nbytes"], len(same)))
            confirmed_raw.update(int(r["gid"]) for r in same)
    matches = np.array(out, MATCH_ROW)
    matches.sort(order="doc")
    atomic.save_npy(out_path, matches)
    return {"matched": len(matches), "raw_rows": len(raw), "raw_matched": len(confirmed_raw)}


# -- the driver ---------------------------------------------------------------------------------

def _eod_convention(data: indexed.IndexedDataset, eod: int) -> bool:
    """Whether the dataset's documents end with EOD (GPT-NeoX's --append-eod), from a sample."""
    n = min(len(data), 2000)
    probe = np.linspace(0, len(data) - 1, n).astype(int) if n else []
    ends = [int(data.read(i)[-1]) == eod for i in probe if int(data.sizes[i])]
    return sum(ends) >= 0.9 * len(ends) if ends else True


def align(out_dir: str | Path, cfg: BuildConfig) -> dict:
    """Match raw inputs (``cfg.read.inputs``, tokenized with ``cfg.tokenize``) to the adopted
    dataset in ``out_dir`` and rewrite its provenance; return the alignment report. Documents
    matched by an earlier alignment keep their source (``candidates`` add up)."""
    if not (Path(out_dir) / MANIFEST).exists():
        raise NotFoundError(f"{out_dir} holds no dataset (no {MANIFEST}); adopt one first")
    if preshuffled(out_dir) is not None:  # items are samples: their pieces are matched
        from pileprep.jobs.align_items import align_items

        return align_items(out_dir, cfg)
    cfg = dataclasses.replace(cfg, pack=dataclasses.replace(cfg.pack, output=str(out_dir)))
    cfg.validate()
    with OutputDir(out_dir, "align", cfg.quiet) as od:
        return _align(od, cfg)


def _align(od: OutputDir, cfg: BuildConfig) -> dict:
    out, manifest = od.path, od.manifest
    if "adopted" not in manifest:
        raise ConfigError(f"{out} was built by pileprep from raw text: its provenance is exact "
                          "already; align works on adopted datasets")
    prefix = dataset_prefix(out, manifest["settings"]["pack"]["name"])
    data = indexed.IndexedDataset(prefix)
    engine, _ = resolve_engine(cfg.tokenize.tokenizer, cfg.tokenize.engine)
    info = TokenizerInfo.of(cfg.tokenize.tokenizer, engine)
    cfg = dataclasses.replace(cfg, tokenize=dataclasses.replace(
        cfg.tokenize, append_eod=_eod_convention(data, info.eod_id)))
    shards = discover(cfg.read.inputs)
    index_id = [data.index.path.stat().st_size, data.index.path.stat().st_mtime_ns]
    fp = fingerprint(ALIGN_FORMAT, shuffle.FORMAT, [(s.name, s.identity()) for s in shards],
                     index_id, tokenizer_identity(cfg.tokenize.tokenizer),
                     cfg.tokenize.append_eod, cfg.read.stage_settings())
    work = out / WORK_DIR / f"align-{fp}"
    log(f"align: {len(shards)} raw input shard(s) against {len(data):,} documents "
        f"({'with' if cfg.tokenize.append_eod else 'without'} EOD, {engine} engine)", cfg.quiet)
    with Runner(cfg.cluster, cfg.quiet) as runner:
        shard_results, parts = run_ingest_and_tokenize(runner, shards, work / "ingest", work / "tokens",
                                                       cfg, info)
        shard_results, parts = _not_aligned_before(out, shard_results, parts, cfg.quiet)
        if not shard_results:
            log("align: every one of these raw inputs was aligned already; nothing to do", cfg.quiet)
            return atomic.read_json(out / REPORT)["alignment"]
        run = fingerprint(fp, [s.sha256 for s in shard_results])  # what every task depends on
        match_paths, subsets, joined = _match(runner, work, prefix, data, shard_results, parts,
                                              info.dtype, [run])
    n_raw = sum(p.docs for p in parts)
    names = [s.source for s in shard_results]
    stage = od.stage()
    summary = write_provenance(out / PROVENANCE, stage / PROVENANCE, data, match_paths, names, subsets)
    summary.update(raw_documents=n_raw, raw_matched=sum(j["raw_matched"] for j in joined),
                   raw_inputs=[{"name": s.source, "sha256": s.sha256} for s in shard_results],
                   append_eod=cfg.tokenize.append_eod)
    matched = summary["documents"]["exact"] + summary["documents"]["ambiguous"]
    if matched < LOW_MATCH * len(data):  # a wrong tokenizer matches nothing but the odd short text
        summary["warning"] = (f"only {matched:,} of {len(data):,} documents matched raw text: is the "
                              "raw text tokenized with the dataset's tokenizer (--tokenizer)?")
    _record(out, stage, summary)
    manifest = Manifest.from_json(manifest)
    manifest.outputs[PROVENANCE] = entry(stage / PROVENANCE)
    od.commit(stage, manifest.to_json())
    od.clean(cfg.keep_work, work)
    return summary


def align_task(name: str, fn, done: Path, inputs: list, **kwargs) -> Task:
    """A task of the content join (here and for preshuffled items)."""
    return Task(name=name, stage=Stage.ALIGN, fn=fn, kwargs=kwargs, done=done, inputs=inputs)


def _match(runner: Runner, work: Path, prefix: Path, data, shard_results, parts, dtype: str,
           run: list) -> tuple[list[Path], list[str], list[dict]]:
    """The hash join as Dask tasks: hash the dataset's documents and the raw ones into
    buckets, then join each bucket. Returns the match files, the subsets, the joins' results."""
    n_raw = sum(p.docs for p in parts)
    n_buckets = max(1, math.ceil((len(data) + n_raw) / BUCKET_ROWS))
    inputs = [*run, n_buckets]
    ds_pfx = [str(work / f"ds-{i:05d}") for i in range(math.ceil(len(data) / DOCS_PER_TASK))]
    runner.run([align_task(f"hash dataset {i}", hash_dataset_task, work / f"ds-{i:05d}.done.json",
                      inputs, prefix=str(prefix), lo=i * DOCS_PER_TASK,
                      hi=min(len(data), (i + 1) * DOCS_PER_TASK), n_buckets=n_buckets,
                      out_prefix=ds_pfx[i]) for i in range(len(ds_pfx))], "hash dataset")
    subsets = sorted({name for p in parts for name in p.subsets})
    shard_of = [i for i, s in enumerate(shard_results) for _ in s.partitions]
    gid0 = np.concatenate([[0], np.cumsum([p.docs for p in parts])]).tolist()
    raw_pfx = [str(work / f"raw-{i:05d}") for i in range(len(parts))]
    runner.run([align_task(f"hash raw {i}", hash_raw_task, work / f"raw-{i:05d}.done.json", inputs,
                      part=p, part_no=i, gid0=gid0[i], shard_no=shard_of[i], subsets=subsets,
                      dtype=dtype, n_buckets=n_buckets, out_prefix=raw_pfx[i])
                for i, p in enumerate(parts)], "hash raw")
    match_paths = [work / f"match-{k:05d}.npy" for k in range(n_buckets)]
    joined = runner.run([align_task(f"join {k}", join_task, work / f"match-{k:05d}.done.json", inputs,
                               k=k, ds_prefixes=ds_pfx, raw_prefixes=raw_pfx,
                               dataset=str(prefix), part_bins=[p.bin for p in parts],
                               dtype=dtype, out_path=str(match_paths[k]))
                         for k in range(n_buckets)], "join")
    return match_paths, subsets, joined


def write_provenance(old_path: Path, new_path: Path, data, match_paths: list[Path],
                     names: list[str], subsets: list[str]) -> dict:
    """Provenance in doc order from the per-bucket matches, merged with an earlier alignment;
    every table is read a chunk of documents at a time. Returns counts per match kind and subset."""
    old = pq.ParquetFile(old_path)
    matches = [np.load(p, mmap_mode="r") for p in match_paths]
    counts: dict[str, dict[str, list[int]]] = {}
    token = 0
    pending: list = []
    with atomic.atomic_path(new_path) as tmp, \
            pq.ParquetWriter(tmp, provenance.ALIGNED_SCHEMA, compression="zstd") as w:
        for batch in old.iter_batches(batch_size=_MERGE_ROWS):
            lo, hi = batch.column("doc")[0].as_py(), batch.column("doc")[-1].as_py() + 1
            sizes = np.asarray(data.sizes[lo:hi])
            src, line, subset, nbytes, match, cand = _merge_chunk(batch.to_pydict(), matches, lo, hi, names, subsets)
            pending.append(provenance.aligned_chunk(lo, token, sizes, src, line, subset, nbytes, match, cand))
            pending = provenance.write_full_groups(w, pending, provenance.ROW_GROUP, final=False)
            token += int(sizes.astype(np.int64).sum())
            for m, s, n in zip(match, subset, sizes.tolist()):
                acc = counts.setdefault(m, {}).setdefault(s if s is not None else "(unknown)", [0, 0])
                acc[0] += 1
                acc[1] += n
        provenance.write_full_groups(w, pending, provenance.ROW_GROUP, final=True)
    return _summary(counts)


def _merge_chunk(old: dict, matches, lo: int, hi: int, names, subsets):
    """Columns of docs lo..hi-1: earlier matches kept, new ones filled in, candidates added."""
    src, line, subset, nbytes = old["source"], old["line"], old["pile_set_name"], old["bytes"]
    match, cand = old["match"], old["candidates"]
    for m in matches:
        a, b = np.searchsorted(m["doc"], [lo, hi])
        for r in m[a:b]:
            i = int(r["doc"]) - lo
            new = (names[int(r["shard"])], int(r["line"]))
            if match[i] == "none" or new < (src[i], line[i]):  # the first in (source, line) order
                src[i], line[i] = new
                subset[i], nbytes[i] = subsets[int(r["subset"])], int(r["nbytes"])
            cand[i] += int(r["candidates"])
            match[i] = "exact" if cand[i] == 1 else "ambiguous"
    return src, line, subset, nbytes, match, cand


def _summary(counts: dict) -> dict:
    total = {m: [sum(v[0] for v in c.values()), sum(v[1] for v in c.values())] for m, c in counts.items()}
    return {"documents": {m: total.get(m, [0, 0])[0] for m in provenance.MATCHES},
            "tokens": {m: total.get(m, [0, 0])[1] for m in provenance.MATCHES},
            "by_subset": {s: {m: counts.get(m, {}).get(s, [0, 0])[0] for m in provenance.MATCHES}
                          for s in sorted({s for c in counts.values() for s in c})}}


def _record(out: Path, stage: Path, summary: dict) -> None:
    """The alignment in the report (staged), after the earlier ones."""
    report = atomic.read_json(out / REPORT)
    runs = (report.get("alignment") or {}).get("runs", [])
    report["alignment"] = {**summary, "runs": runs + [summary["raw_inputs"]]}
    atomic.write_json(stage / REPORT, report)


def _not_aligned_before(out: Path, shard_results, parts, quiet: bool):
    """The raw shards (and their token parts) no earlier alignment used, by name and content:
    a shard aligned before would count its documents' candidates twice."""
    alignment = atomic.read_json(out / REPORT).get("alignment") or {}
    done = {(i["name"], i["sha256"]) for run in alignment.get("runs", []) for i in run}
    keep = [(s.source, s.sha256) not in done for s in shard_results]
    if not all(keep):
        log(f"align: skipping {keep.count(False)} raw shard(s) aligned before", quiet)
    owner = [k for k, s in zip(keep, shard_results) for _ in s.partitions]
    return ([s for k, s in zip(keep, shard_results) if k], [p for k, p in zip(owner, parts) if k])
