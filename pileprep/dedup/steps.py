"""The dedup stage's tasks, each a plain function of files to files, run by Dask workers.

Global document ids (``gid``) number the accepted documents in ``(source, line)`` order; a
partition holds the gids ``[offset, offset + rows)``. The flow, with the shuffle between steps:

    signatures (per partition) -> band keys (per partition) --shuffle by key-->
    group (per bucket): candidate pairs --shuffle by partition of a-->
    attach (per partition): signature of a --shuffle by partition of b-->
    verify (per partition): estimated Jaccard, keep >= threshold --> edges
    components (one task): connected components; keep the smallest gid of each

Every step's output depends only on its inputs, never on how the work was cut, so the result is
the same for any number of workers, partitions or buckets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pileprep.core import atomic
from pileprep.dedup import minhash, shuffle
from pileprep.core.errors import PilePrepError
from pileprep.formats.parts import (Records, arrow_of, codes_of, dictionary_of, numpy_of,
                                     partition_batches, read_parquet)

BAND_ROW = np.dtype([("key", "<u8"), ("gid", "<i8")])
PAIR_ROW = np.dtype([("a", "<i8"), ("b", "<i8")])
EDGE_ROW = np.dtype([("a", "<i8"), ("b", "<i8"), ("sim", "<f4")])
_BATCH_DOCS = 256


def attach_row(num_perm: int) -> np.dtype:
    return np.dtype([("a", "<i8"), ("b", "<i8"), ("sig", "<u4", (num_perm,))])


SIGNATURE_SCHEMA = pa.schema([
    ("line", pa.int64()),
    ("pile_set_name", pa.string()),
    ("has_shingles", pa.bool_()),
])


def matrix_path(sig_path: str | Path) -> Path:
    """The signatures of a partition's signature file ``<stem>.parquet`` (which holds each
    document's line, subset and whether it has shingles): ``<stem>.npy``, (rows, num_perm)
    uint32. A plain array, not a parquet list column: every LSH step reads it, and decoding
    the list column ran at ~130 MB/s (0.5 s of each step for 127,550 documents)."""
    return Path(sig_path).with_suffix(".npy")


def signature_task(part_path: str, out_path: str, num_perm: int, seed: int, words: int,
                   records: Records | None = None) -> dict:
    """MinHash every document of one ingest partition (read from its file or, inline, from
    ``records`` in memory) into its signature files: the matrix (written first, a batch at a
    time into a file made at its full size) and the parquet file, whose completion marks both."""
    rows = len(records.texts) if records is not None else pq.ParquetFile(part_path).metadata.num_rows
    lines, subsets, has = [], [], []
    with atomic.atomic_path(matrix_path(out_path)) as tmp:
        out = np.lib.format.open_memmap(tmp, "w+", np.uint32, (rows, num_perm))
        at = 0
        for batch in partition_batches(part_path, records, _BATCH_DOCS):
            out[at:at + len(batch.texts)], batch_has = minhash.signatures(batch.texts, num_perm,
                                                                          seed, words)
            at += len(batch.texts)
            lines.append(batch.lines)
            subsets += batch.subsets
            has.append(batch_has)
        out.flush()
        del out
    if at != rows:
        raise PilePrepError(f"{part_path}: {at} documents, its metadata says {rows}")
    names, codes = codes_of(subsets)
    table = pa.table([arrow_of(np.concatenate(lines) if lines else [], pa.int64()),
                      dictionary_of(names, codes).cast(pa.string()),
                      arrow_of(np.concatenate(has) if has else [], pa.bool_())],
                     schema=SIGNATURE_SCHEMA)
    with atomic.atomic_path(out_path) as tmp:
        pq.write_table(table, tmp)
    return {"rows": rows}


def load_signatures(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(signatures (rows, num_perm) uint32, has_shingles bool)`` of one partition."""
    return (np.load(matrix_path(path)),
            numpy_of(read_parquet(path, ["has_shingles"]).column("has_shingles")))


def band_task(sig_path: str, gid0: int, bands: int, rows: int, n_buckets: int, out_prefix: str) -> int:
    sig, has = load_signatures(sig_path)
    out = band_rows_of(sig, has, gid0, bands, rows)
    return shuffle.write(out_prefix, out, (out["key"] % np.uint64(n_buckets)).astype(np.int64), n_buckets)


def band_rows_of(sig: np.ndarray, has: np.ndarray, gid0: int, bands: int, rows: int) -> np.ndarray:
    """A (band key, gid) row per band of every document with shingles, in gid order."""
    keys = minhash.band_keys(sig, bands, rows)  # of every row: no copy of the matrix
    keys = keys if has.all() else keys[has]
    out = np.empty(keys.size, BAND_ROW)
    out["key"], out["gid"] = keys.ravel(), np.repeat(np.flatnonzero(has) + gid0, bands)
    return out


def edges_of(a: np.ndarray, b: np.ndarray, sims: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The kept pairs ``(a, b)`` with their estimated similarity, as edges."""
    edges = np.empty(int(keep.sum()), EDGE_ROW)
    edges["a"], edges["b"], edges["sim"] = a[keep], b[keep], sims[keep]
    return edges


def part_of(gids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Partition index of each gid; ``offsets`` are the partitions' first gids, ascending."""
    return np.searchsorted(offsets, gids, side="right") - 1


def candidate_pairs(rows: np.ndarray) -> np.ndarray:
    """Pairs ``a < b`` from documents sharing a band key: each member with the group's first
    member (star) and with its predecessor (chain), so a group of m documents gives < 2m pairs
    however large it is, and still connects every member."""
    rows = rows[np.lexsort((rows["gid"], rows["key"]))]
    same = rows["key"][1:] == rows["key"][:-1]
    if not same.any():
        return np.zeros(0, PAIR_ROW)
    head = np.concatenate([[True], ~same])
    first = rows["gid"][head][np.cumsum(head) - 1]
    member = np.flatnonzero(~head)
    pairs = np.empty(2 * len(member), PAIR_ROW)
    pairs["a"] = np.concatenate([first[member], rows["gid"][member - 1]])
    pairs["b"] = np.concatenate([rows["gid"][member], rows["gid"][member]])
    return unique_pairs(pairs)


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """``np.unique`` of pair rows (sorted by ``a``, then ``b``), by a two-key sort of their
    fields: numpy sorts record arrays by comparing rows, ~8x slower."""
    pairs = pairs[np.lexsort((pairs["b"], pairs["a"]))]
    new = np.ones(len(pairs), bool)
    new[1:] = (pairs["a"][1:] != pairs["a"][:-1]) | (pairs["b"][1:] != pairs["b"][:-1])
    return pairs[new]


def group_task(k: int, band_prefixes: Sequence[str], offsets: np.ndarray, out_prefix: str) -> int:
    pairs = candidate_pairs(shuffle.read(band_prefixes, k, BAND_ROW))
    return shuffle.write(out_prefix, pairs, part_of(pairs["a"], offsets), len(offsets))


def attach_task(p: int, group_prefixes: Sequence[str], sig_path: str, gid0: int,
                offsets: np.ndarray, out_prefix: str) -> int:
    """Pairs whose first document is in partition ``p``, with that document's signature."""
    pairs = unique_pairs(shuffle.read(group_prefixes, p, PAIR_ROW))
    sig, _ = load_signatures(sig_path)
    out = np.empty(len(pairs), attach_row(sig.shape[1]))
    out["a"], out["b"] = pairs["a"], pairs["b"]
    out["sig"] = sig[pairs["a"] - gid0]
    return shuffle.write(out_prefix, out, part_of(pairs["b"], offsets), len(offsets))


def verify_task(q: int, attach_prefixes: Sequence[str], sig_path: str, gid0: int,
                threshold: float, out_path: str) -> dict:
    """Keep the pairs whose second document (in partition ``q``) is similar enough to the first."""
    sig, _ = load_signatures(sig_path)
    rows = shuffle.read(attach_prefixes, q, attach_row(sig.shape[1]))
    sims = minhash.jaccard(rows["sig"], sig[rows["b"] - gid0]) if len(rows) else np.zeros(0)
    keep = sims >= threshold
    edges = edges_of(rows["a"], rows["b"], sims, keep)
    atomic.save_npy(out_path, edges[np.lexsort((edges["b"], edges["a"]))])
    return {"candidates": int(len(rows)), "verified": int(keep.sum())}


def unverified_task(p: int, group_prefixes: Sequence[str], out_path: str) -> dict:
    """Without verification every candidate pair is an edge (similarity unknown: NaN)."""
    pairs = unique_pairs(shuffle.read(group_prefixes, p, PAIR_ROW))
    edges = edges_of(pairs["a"], pairs["b"], np.full(len(pairs), np.nan, np.float32),
                     np.ones(len(pairs), bool))
    atomic.save_npy(out_path, edges)
    return {"candidates": int(len(pairs)), "verified": int(len(pairs))}


REMOVED_ROW = np.dtype([("gid", "<i8"), ("kept", "<i8"), ("sim", "<f4"), ("direct", "?")])


def components(edge_paths: Sequence[str], out_path: str) -> dict:
    """The components task: every partition's verified edges in, the removed documents out."""
    edges = np.concatenate([np.load(p) for p in edge_paths]) if edge_paths else np.zeros(0, EDGE_ROW)
    removed, stats = removed_documents(edges)
    atomic.save_npy(out_path, removed)
    return stats


def removed_documents(edges: np.ndarray) -> tuple[np.ndarray, dict]:
    """Join verified edges (in any order) into connected components; in each, keep the
    smallest gid. The removed documents (``REMOVED_ROW``, by gid) and counts.

    Each removed document gets the highest similarity among its own edges, and ``direct``
    says whether an edge joins it to the kept document itself (otherwise it was joined through
    other members). Memory: the edges plus about 40 bytes per document that has an edge.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inverse = np.unique(np.concatenate([edges["a"], edges["b"]]), return_inverse=True)
    ia, ib = inverse[:len(edges)], inverse[len(edges):]
    graph = coo_matrix((np.ones(len(edges), np.int8), (ia, ib)), shape=(len(nodes), len(nodes)))
    _, label = connected_components(graph, directed=False)
    root = np.full(label.max() + 1 if len(label) else 0, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(root, label, nodes)  # nodes are sorted, so this is the smallest gid
    kept = root[label]
    best = np.full(len(nodes), -np.inf, np.float32)
    sims = np.nan_to_num(edges["sim"], nan=-1.0)
    np.maximum.at(best, ia, sims)
    np.maximum.at(best, ib, sims)
    direct = np.zeros(len(nodes), bool)
    direct[ib[edges["a"] == kept[ib]]] = True
    removed = nodes != kept
    out = np.empty(int(removed.sum()), REMOVED_ROW)
    out["gid"], out["kept"] = nodes[removed], kept[removed]
    out["sim"] = np.where(best[removed] < 0, np.nan, best[removed])
    out["direct"] = direct[removed]
    return out, {"edges": int(len(edges)), "documents_in_clusters": int(len(nodes)),
                 "clusters": int(len(root)), "removed": int(removed.sum())}


def in_memory(sig_paths: Sequence[str], bands: int, rows: int, threshold: float, verify: bool,
              out_path: str) -> dict:
    """Every step at once, in one process, for a corpus whose signatures fit in memory
    (``stages.dedup.LOCAL_BYTES``): the same pure steps as the tasks above on all documents
    as one partition and one bucket, so the same removed documents and counts (tested),
    without their ~300 shuffle files and records (60 MB of real text: 0.4 s of 0.5)."""
    loaded = [load_signatures(p) for p in sig_paths]
    sig = np.concatenate([s for s, _ in loaded]) if loaded else np.zeros((0, 1), np.uint32)
    has = np.concatenate([h for _, h in loaded]) if loaded else np.zeros(0, bool)
    pairs = candidate_pairs(band_rows_of(sig, has, 0, bands, rows))
    sims = (minhash.jaccard(sig[pairs["a"]], sig[pairs["b"]]) if verify and len(pairs)
            else np.full(len(pairs), np.nan))
    keep = sims >= threshold if verify else np.ones(len(pairs), bool)
    removed, stats = removed_documents(edges_of(pairs["a"], pairs["b"], sims, keep))
    atomic.save_npy(out_path, removed)
    return {"candidates": int(len(pairs)), "verified": int(keep.sum()), **stats}
