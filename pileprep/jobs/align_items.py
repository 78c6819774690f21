"""Provenance of a preshuffled dataset's items by content, without its index maps.

An item of a preshuffled dataset is a training sample: L+1 tokens of the shuffled document
stream, documents ended by EOD. Cut at its EODs, an item is a run of *pieces*:

- pieces that follow an EOD and end with one are whole documents (with their EOD): matched to
  raw documents by a hash of all their ids, as ``align`` matches documents (and, as a document
  may hold an EOD of its own, as a tail and a head too: a part of such a document shorter than
  ``W``, or between two of its own EODs, is not matched);
- the first piece ends with an EOD but starts where the sample starts: the end (*tail*) of a
  document. It is matched by a hash of its last ``W`` tokens against every raw document's last
  ``W`` tokens, then confirmed by comparing ids (the piece is the document's last tokens);
- the last piece starts after an EOD but is cut by the sample's end: the start (*head*) of a
  document, matched by its first ``W`` tokens likewise;
- a piece shorter than ``W`` at either edge (*short*), or an item with no EOD at all (the
  *inside* of a long document), is not matched: it is reported, with its tokens.

``W = 64``: long enough that unrelated documents rarely share a start or an end (64 tokens
are ~250 characters, more than most licence or boilerplate openings share), short enough that
few edge pieces are shorter (a sample cuts a document at a uniformly random place, so with
Pile documents of ~1,500 tokens on average ~4 % of edge pieces are). Candidates are always
confirmed by their ids, so ``W`` trades only the short pieces against the candidates compared.

As in ``align``: the raw text is tokenized as the dataset was (plus EOD), both sides are hashed
into the buckets of a disk shuffle, one Dask task joins a bucket, and a first-in-(source, line)
candidate is named with the count of candidates. The result, ``item_sources.npy`` (one row
per piece, by item and position) with ``item_sources.json`` (the names) and an offset per
item, is what a preshuffled dataset without a link answers sources from. Every task holds one
bucket or one range of items; the driver joins the ranges' rows through a mapped file.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pileprep.core import atomic
from pileprep.core.config import BuildConfig, fingerprint
from pileprep.core.errors import ConfigError
from pileprep.core.files import ITEM_SOURCES, ITEM_SOURCES_NAMES, ITEM_SOURCES_OFFSETS, REPORT
from pileprep.core.outdir import OutputDir
from pileprep.core.progress import log
from pileprep.dedup import shuffle
from pileprep.formats import indexed
from pileprep.formats.manifest import Manifest, entry
from pileprep.formats.suffix import files_identity
from pileprep.formats.parts import TokenPart
from pileprep.jobs.align import align_task, ids_hash
from pileprep.runner.dask_runner import Runner
from pileprep.sources import discover
from pileprep.stages.graph import run_ingest_and_tokenize, tokenizer_identity
from pileprep.tokenizer import TokenizerInfo, resolve_engine
from pileprep.training.order import preshuffled

W = 64  # tokens of a document's start and end that key its edge pieces (see the docstring)
ALIGN_ITEMS_FORMAT = 1
ITEMS_PER_TASK = 1 << 15  # items cut into pieces by one task
BUCKET_ROWS = 1 << 21  # rows of both sides per join bucket
WHOLE, TAIL, HEAD, SHORT, INSIDE = range(5)
PIECE_KEY = 1 << 20  # a piece's (item, position) as one number: item * PIECE_KEY + position
KINDS = ("whole", "tail", "head", "short", "inside")
PIECE_ROW = np.dtype([("key", "<u8"), ("kind", "i1"), ("item", "<i8"), ("row_start", "<i4"),
                      ("ntok", "<i4")])
LIST_ROW = np.dtype([("item", "<i8"), ("row_start", "<i4"), ("ntok", "<i4"), ("kind", "i1")])
RAW_ROW = np.dtype([("key", "<u8"), ("kind", "i1"), ("part", "<i4"), ("offset", "<i8"),
                    ("ntok", "<i8"), ("shard", "<i4"), ("line", "<i8"), ("subset", "<i4")])
# One row per piece of every item: where the piece is, and the document it was matched to
# (shard -1: not matched; candidates: raw documents it equals, 0 if none).
SOURCE_ROW = np.dtype([("item", "<i8"), ("row_start", "<i4"), ("ntok", "<i4"), ("kind", "i1"),
                       ("doc_start", "<i8"), ("shard", "<i4"), ("line", "<i8"),
                       ("subset", "<i4"), ("candidates", "<i4")])


# -- tasks (run on workers) ----------------------------------------------------------------------

def cut_items(tokens: np.ndarray, first_item: int, eod: int) -> np.ndarray:
    """The pieces of items (rows of ``tokens``, the first numbered ``first_item``), keyed."""
    rows = []
    width = tokens.shape[1]
    for i, item in enumerate(tokens):
        ends = (np.flatnonzero(item == eod) + 1).tolist()
        starts = [0] + ends
        if not ends or ends[-1] != width:
            ends = ends + [width]
        for a, b in zip(starts, ends):
            rows += _piece(item, first_item + i, a, b, eod)
    return np.array(rows, PIECE_ROW)


def _piece(item: np.ndarray, n: int, a: int, b: int, eod: int) -> list[tuple]:
    """The piece's keyed rows (the listed one first). A piece between two EODs is a whole
    document, unless the document holds an EOD of its own (its text had a literal
    ``<|endoftext|>``): then it is a tail or a head of one, so it is keyed those ways too."""
    whole_end = item[b - 1] == eod
    if a > 0 and whole_end:
        rows = [(ids_hash(item[a:b]), WHOLE, n, a, b - a)]
        if b - a >= W:
            rows += [(ids_hash(item[b - W:b]), TAIL, n, a, b - a),
                     (ids_hash(item[a:a + W]), HEAD, n, a, b - a)]
        return rows
    if b - a < W and (a > 0 or whole_end):
        kind, key = SHORT, 0
    elif whole_end:  # from the sample's start to an EOD: a document's tail
        kind, key = TAIL, ids_hash(item[b - W:b])
    elif a > 0:  # from an EOD to the sample's end: a document's head
        kind, key = HEAD, ids_hash(item[a:a + W])
    else:
        kind, key = INSIDE, 0
    return [(key, kind, n, a, b - a)]


def pieces_task(prefix: str, lo: int, hi: int, eod: int, n_buckets: int, out_prefix: str,
                list_path: str) -> dict:
    """Items ``lo .. hi-1`` cut into pieces: every piece listed, the keyed ones bucketed."""
    data = indexed.IndexedDataset(prefix)
    width = int(data.sizes[0])
    rows = []
    for a in range(lo, hi, 1 << 11):  # 2,048 items (~8 MB) read at a time
        b = min(a + (1 << 11), hi)
        rows.append(cut_items(data.read_tokens(a * width, b * width).reshape(b - a, width), a, eod))
    rows = np.concatenate(rows) if rows else np.zeros(0, PIECE_ROW)
    first = np.ones(len(rows), bool)  # a piece's first row (a whole one has three)
    first[1:] = (rows["item"][1:] != rows["item"][:-1]) | (rows["row_start"][1:] != rows["row_start"][:-1])
    listed = np.zeros(int(first.sum()), LIST_ROW)
    for f in LIST_ROW.names:
        listed[f] = rows[f][first]
    atomic.save_npy(list_path, listed)
    keyed = rows[rows["kind"] <= HEAD]
    shuffle.write(out_prefix, keyed, (keyed["key"] % np.uint64(n_buckets)).astype(np.int64),
                  n_buckets)
    return {"pieces": len(rows)}


def raw_task(part: TokenPart, part_no: int, shard_no: int, subsets: list[str], dtype: str,
             n_buckets: int, out_prefix: str) -> int:
    """Every raw document of a token part keyed three ways: all its ids, its tail, its head."""
    prov = pq.read_table(part.prov, columns=["line", "pile_set_name", "tokens"])
    sizes = prov.column("tokens").to_numpy().astype(np.int64)
    tokens = np.fromfile(part.bin, dtype=np.dtype(dtype))
    lines = prov.column("line").to_numpy()
    code = {name: i for i, name in enumerate(subsets)}
    subset = [code[s] for s in prov.column("pile_set_name").to_pylist()]
    starts = np.cumsum(sizes) - sizes
    out = []
    for d, (a, n) in enumerate(zip(starts.tolist(), sizes.tolist())):
        ids = tokens[a:a + n]
        keys = [(WHOLE, ids_hash(ids))]
        if n >= W:
            keys += [(TAIL, ids_hash(ids[-W:])), (HEAD, ids_hash(ids[:W]))]
        out += [(key, kind, part_no, a, n, shard_no, lines[d], subset[d]) for kind, key in keys]
    rows = np.array(out, RAW_ROW)
    return shuffle.write(out_prefix, rows, (rows["key"] % np.uint64(n_buckets)).astype(np.int64),
                         n_buckets)


def join_task(k: int, piece_prefixes: list[str], raw_prefixes: list[str], dataset: str,
              part_bins: list[str], dtype: str, n_ranges: int, out_prefix: str) -> dict:
    """Bucket k: each keyed piece with the raw documents it is confirmed to be (a part of)."""
    pieces = shuffle.read(piece_prefixes, k, PIECE_ROW)
    raw = shuffle.read(raw_prefixes, k, RAW_ROW)
    raw = raw[np.lexsort((raw["line"], raw["shard"], raw["kind"], raw["key"]))]
    data = indexed.IndexedDataset(dataset)
    width, item_len = np.dtype(dtype).itemsize, int(data.sizes[0])
    both = raw["key"].astype(object) * 8 + raw["kind"]  # (key, kind) in one sortable value
    want = pieces["key"].astype(object) * 8 + pieces["kind"]
    lo, hi = np.searchsorted(both, want, "left"), np.searchsorted(both, want, "right")
    out = []
    for p, a, b in zip(pieces, lo.tolist(), hi.tolist()):
        ids = data.read_tokens(int(p["item"]) * item_len + int(p["row_start"]),
                               int(p["item"]) * item_len + int(p["row_start"]) + int(p["ntok"]))
        same = [r for r in raw[a:b] if _confirmed(r, ids, int(p["kind"]), part_bins, dtype, width)]
        if same:
            r = same[0]  # sorted: the first in (source, line) order
            start = int(r["ntok"]) - len(ids) if p["kind"] == TAIL else 0
            out.append((p["item"], p["row_start"], p["ntok"], p["kind"], start, r["shard"],
                        r["line"], r["subset"], len(same)))
    matches = np.array(out, SOURCE_ROW)
    shuffle.write(out_prefix, matches, matches["item"] // ITEMS_PER_TASK, n_ranges)
    return {"matched": len(matches)}


def sources_task(r: int, list_path: str, match_prefixes: list[str], out_path: str) -> dict:
    """Item range r: every piece, with its match placed; the rows per item and the counts."""
    pieces = np.load(list_path)  # in item and position order, as cut
    rows = np.zeros(len(pieces), SOURCE_ROW)
    for f in LIST_ROW.names:
        rows[f] = pieces[f]
    rows["shard"], rows["line"], rows["subset"] = -1, -1, -1
    matches = shuffle.read(match_prefixes, r, SOURCE_ROW)
    if len(matches):
        # A piece matched several ways keeps one: whole before tail before head.
        matches = matches[np.lexsort((matches["kind"], matches["row_start"], matches["item"]))]
        key = matches["item"] * PIECE_KEY + matches["row_start"]
        matches = matches[np.unique(key, return_index=True)[1]]
        at = np.searchsorted(rows["item"] * PIECE_KEY + rows["row_start"],
                             matches["item"] * PIECE_KEY + matches["row_start"])
        assert np.array_equal(rows["item"][at], matches["item"]) and \
            np.array_equal(rows["row_start"][at], matches["row_start"])  # every match its piece
        rows[at] = matches
    atomic.save_npy(out_path, rows)
    return {"rows": len(rows), "counts": _counts(rows)}


def _confirmed(r, ids: np.ndarray, kind: int, part_bins: list[str], dtype: str,
               width: int) -> bool:
    n = int(r["ntok"])
    if n < len(ids) or (kind == WHOLE and n != len(ids)):
        return False
    skip = n - len(ids) if kind == TAIL else 0  # a tail is the document's last tokens
    doc = np.fromfile(part_bins[int(r["part"])], dtype=np.dtype(dtype), count=len(ids),
                      offset=(int(r["offset"]) + skip) * width)
    return np.array_equal(doc, ids)


# -- the driver ---------------------------------------------------------------------------------

def align_items(out_dir: str | Path, cfg: BuildConfig) -> dict:
    """Recover the sources of a preshuffled dataset's items from raw text; return the report
    (also in ``report.json``'s ``alignment``)."""
    items = preshuffled(out_dir)
    if items is None:
        raise ConfigError(f"{out_dir} is not a preshuffled dataset")
    if items["seq_length"] + 1 >= PIECE_KEY:
        raise ConfigError(f"items of {items['seq_length'] + 1} tokens: at most {PIECE_KEY - 1}")
    # Documents are told apart by their EOD: the raw text is tokenized with it, whatever set.
    cfg = dataclasses.replace(cfg, pack=dataclasses.replace(cfg.pack, output=str(out_dir)),
                              tokenize=dataclasses.replace(cfg.tokenize, append_eod=True))
    cfg.validate()
    with OutputDir(out_dir, "align", cfg.quiet) as od:
        return _align_items(od, cfg, items)


def _align_items(od: OutputDir, cfg: BuildConfig, items: dict) -> dict:
    from pileprep.core.files import dataset_prefix, index_path

    prefix = dataset_prefix(od.path, od.manifest["settings"]["pack"]["name"])
    engine, _ = resolve_engine(cfg.tokenize.tokenizer, cfg.tokenize.engine)
    info = TokenizerInfo.of(cfg.tokenize.tokenizer, engine)
    shards = discover(cfg.read.inputs)
    fp = fingerprint(ALIGN_ITEMS_FORMAT, shuffle.FORMAT, W, ITEMS_PER_TASK,
                     [(s.name, s.identity()) for s in shards],
                     tokenizer_identity(cfg.tokenize.tokenizer), cfg.read.stage_settings(),
                     items, files_identity([index_path(prefix)]))
    work = od.work / f"align-items-{fp}"
    log(f"align: {len(shards)} raw input shard(s) against {items['items']:,} preshuffled items "
        f"({engine} engine; edges keyed by {W} tokens)", cfg.quiet)
    with Runner(cfg.cluster, cfg.quiet) as runner:
        shard_results, parts = run_ingest_and_tokenize(runner, shards, work / "ingest",
                                                       work / "tokens", cfg, info)
        names = [s.source for s in shard_results]
        subsets = sorted({n for p in parts for n in p.subsets})
        parts_out, done = _match(runner, work, prefix, items["items"], shard_results, parts,
                                 subsets, info, [fp])
    stage = od.stage()
    summary = _write_sources(stage, parts_out, done, names, subsets, items["items"])
    report = atomic.read_json(od.path / REPORT)
    report["alignment"] = summary
    atomic.write_json(stage / REPORT, report)
    manifest = Manifest.from_json(od.manifest)
    for name in (ITEM_SOURCES, ITEM_SOURCES_OFFSETS, ITEM_SOURCES_NAMES):
        manifest.outputs[name] = entry(stage / name)
    od.commit(stage, manifest.to_json())
    od.clean(cfg.keep_work, work)
    return summary


def _match(runner: Runner, work: Path, prefix: Path, n_items: int, shard_results, parts,
           subsets: list[str], info: TokenizerInfo, run: list) -> tuple[list[Path], list[Path]]:
    """Pieces of the items and keys of the raw documents into buckets, each bucket joined:
    the piece lists (one per item range) and the matches (one file per bucket)."""
    n_raw = sum(p.docs for p in parts)
    n_buckets = max(1, math.ceil((3 * n_raw + 3 * n_items) / BUCKET_ROWS))
    inputs = [*run, n_buckets]
    ranges = list(range(0, n_items, ITEMS_PER_TASK))
    piece_pfx = [str(work / f"pieces-{i:05d}") for i in range(len(ranges))]
    lists = [work / f"pieces-{i:05d}.list.npy" for i in range(len(ranges))]
    runner.run([align_task(f"cut items {lo}", pieces_task, work / f"pieces-{i:05d}.done.json", inputs,
                      prefix=str(prefix), lo=lo, hi=min(lo + ITEMS_PER_TASK, n_items),
                      eod=info.eod_id, n_buckets=n_buckets, out_prefix=piece_pfx[i],
                      list_path=str(lists[i])) for i, lo in enumerate(ranges)], "cut items")
    shard_of = [i for i, s in enumerate(shard_results) for _ in s.partitions]
    raw_pfx = [str(work / f"raw-{i:05d}") for i in range(len(parts))]
    runner.run([align_task(f"key raw {i}", raw_task, work / f"raw-{i:05d}.done.json", inputs, part=p,
                      part_no=i, shard_no=shard_of[i], subsets=subsets, dtype=info.dtype,
                      n_buckets=n_buckets, out_prefix=raw_pfx[i])
                for i, p in enumerate(parts)], "key raw")
    match_pfx = [str(work / f"match-{k:05d}") for k in range(n_buckets)]
    runner.run([align_task(f"join {k}", join_task, work / f"match-{k:05d}.done.json", inputs, k=k,
                      piece_prefixes=piece_pfx, raw_prefixes=raw_pfx, dataset=str(prefix),
                      part_bins=[p.bin for p in parts], dtype=info.dtype,
                      n_ranges=len(ranges), out_prefix=match_pfx[k])
                for k in range(n_buckets)], "join")
    parts_out = [work / f"sources-{r:05d}.npy" for r in range(len(ranges))]
    done = runner.run([align_task(f"sources {r}", sources_task, work / f"sources-{r:05d}.done.json",
                             inputs, r=r, list_path=str(lists[r]), match_prefixes=match_pfx,
                             out_path=str(parts_out[r])) for r in range(len(ranges))], "sources")
    return parts_out, done


def _write_sources(stage: Path, parts: list[Path], done: list[dict], names: list[str],
                   subsets: list[str], n_items: int) -> dict:
    """The item ranges' rows one after the other, and the offset of each item's rows, through
    mapped files (one range in memory at a time); the names; the counts."""
    total = sum(d["rows"] for d in done)
    with atomic.atomic_path(stage / ITEM_SOURCES) as tmp, \
            atomic.atomic_path(stage / ITEM_SOURCES_OFFSETS) as tmp_offsets:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=SOURCE_ROW, shape=(total,))
        offsets = np.lib.format.open_memmap(tmp_offsets, mode="w+", dtype=np.int64,
                                            shape=(n_items + 1,))
        at = 0
        for r, path in enumerate(parts):
            rows = np.load(path)
            lo, hi = r * ITEMS_PER_TASK, min((r + 1) * ITEMS_PER_TASK, n_items)
            offsets[lo:hi + 1] = at + np.searchsorted(rows["item"], np.arange(lo, hi + 1))
            out[at:at + len(rows)] = rows
            at += len(rows)
        out.flush()
        offsets.flush()
        del out, offsets
    atomic.write_json(stage / ITEM_SOURCES_NAMES, {"sources": names, "subsets": subsets, "w": W})
    return _summary([d["counts"] for d in done], subsets)


def _counts(rows: np.ndarray) -> dict:
    """Pieces and tokens of a range's rows, by outcome, and matched ones by subset code."""
    matched = rows["shard"] >= 0
    groups = {"exact": matched & (rows["candidates"] == 1),
              "ambiguous": matched & (rows["candidates"] > 1)}
    for kind in (WHOLE, TAIL, HEAD, SHORT, INSIDE):
        groups[f"none_{KINDS[kind]}"] = ~matched & (rows["kind"] == kind)
    subset = {int(c): [int((matched & (rows["subset"] == c)).sum()),
                       int(rows["ntok"][matched & (rows["subset"] == c)].sum())]
              for c in np.unique(rows["subset"][matched])}
    return {"pieces": {k: int(m.sum()) for k, m in groups.items()},
            "tokens": {k: int(rows["ntok"][m].sum()) for k, m in groups.items()},
            "subset": subset}


def _summary(counts: list[dict], subsets: list[str]) -> dict:
    """Pieces and tokens: matched exactly (one candidate), ambiguous, unmatched (by kind)."""
    out: dict = {"pieces": {}, "tokens": {}, "by_subset": {n: {"pieces": 0, "tokens": 0}
                                                          for n in subsets}}
    for c in counts:
        for what in ("pieces", "tokens"):
            for k, n in c[what].items():
                out[what][k] = out[what].get(k, 0) + n
        for code, (pieces, tokens) in c["subset"].items():
            out["by_subset"][subsets[int(code)]]["pieces"] += pieces
            out["by_subset"][subsets[int(code)]]["tokens"] += tokens
    return out
