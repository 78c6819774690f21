"""``pileprep verify OUT_DIR``: check a finished build against itself and its manifest.

Checks, each reported by name with what is wrong:

- the manifest lists every output with its size and sha256, and the files match;
- the ``.idx`` header (magic, version, dtype code, counts) and its internal consistency: sizes
  positive, pointers the running sum of sizes, the ``.bin`` exactly as long as the index says,
  the document index ``0..N``;
- the provenance table: one row per sequence, ``doc`` in order, ``tokens`` equal to the sizes,
  ``token_start`` their running sum;
- each recorded schedule: its three files present and consistent with the dataset (document
  index a permutation of documents per epoch, sample index monotone and inside the token
  stream, shuffle index a permutation of the samples);
- the report's accounting identity; no unfinished commit of outputs.
"""

from __future__ import annotations

import filecmp
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pileprep.core import atomic
from pileprep.core.config import ScheduleConfig
from pileprep.core.errors import PilePrepError
from pileprep.core.files import (JOURNAL, MANIFEST, NAMINGS, PROVENANCE, REPORT, STAGING,
                                 dataset_prefix, index_path)
from pileprep.formats import indexed
from pileprep.formats.report import accounting_gap
from pileprep.training import schedule_files
from pileprep.training.lookups import last_at_most


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def bad(self, what: str) -> None:
        self.problems.append(what)

    def ok(self, what: str) -> None:
        self.checked.append(what)


_CHUNK = 1 << 22  # index entries checked at once (32 MiB of int64): memory stays flat at Pile scale
# doc_idx entries walked at once: each walk chunk reads every block of ``sizes`` once (its
# documents are spread over all of them), so it is larger than _CHUNK to make fewer passes.
_WALK = 1 << 23


def _first_bad_pointer(index: indexed.Index) -> int | None:
    """The first sequence whose pointer is not the running sum of the sizes before it."""
    offset = 0
    for lo, chunk in indexed.chunks(index.sizes, _CHUNK):
        sizes = chunk.astype(np.int64) * index.dtype.itemsize
        want = np.cumsum(sizes) - sizes + offset
        bad = np.flatnonzero(indexed.rows(index.pointers, lo, lo + len(chunk)) != want)
        if len(bad):
            return lo + int(bad[0])
        offset = int(want[-1] + sizes[-1])
    return None


def _doc_idx_is_identity(index: indexed.Index) -> bool:
    if len(index.doc_idx) != len(index) + 1:
        return False
    return all(np.array_equal(chunk, np.arange(lo, lo + len(chunk)))
               for lo, chunk in indexed.chunks(index.doc_idx, _CHUNK))


def check_dataset(prefix: Path, v: Verdict) -> indexed.Index | None:
    """Index and data file of one dataset; returns the index when it is readable."""
    idx, files = index_path(prefix), indexed.data_files(prefix)
    for p in (idx, *files):
        if not p.exists():
            v.bad(f"{p.name}: missing")
            return None
    try:
        index = indexed.Index(idx)
    except PilePrepError as exc:
        v.bad(str(exc))
        return None
    nonpositive = sum(int((chunk <= 0).sum()) for _, chunk in indexed.chunks(index.sizes, _CHUNK))
    if nonpositive:
        v.bad(f"{idx.name}: {nonpositive} sequences with size <= 0")
    first = _first_bad_pointer(index)
    if first is not None:
        v.bad(f"{idx.name}: pointer of sequence {first} does not follow from the sizes before it")
    if not _doc_idx_is_identity(index):
        v.bad(f"{idx.name}: document index is not 0..{len(index)}")
    want, have = index.data_bytes, sum(p.stat().st_size for p in files)
    if have != want:
        label = files[0].name if len(files) == 1 else f"{len(files)} data pieces"
        v.bad(f"{label}: {have} bytes, the index says {want} ({'truncated' if have < want else 'too long'})")
    v.ok(f"{idx.name}: {len(index):,} sequences, {want // index.dtype.itemsize:,} tokens of {index.dtype}")
    return index


def check_manifest(out: Path, manifest: dict, v: Verdict) -> None:
    for name, meta in manifest.get("outputs", {}).items():
        path = out / name
        if not path.exists():
            v.bad(f"{name}: listed in the manifest but missing")
        elif path.stat().st_size != meta["bytes"]:
            v.bad(f"{name}: {path.stat().st_size} bytes, the manifest says {meta['bytes']}")
        elif atomic.sha256_file(path) != meta["sha256"]:
            v.bad(f"{name}: sha256 differs from the manifest (the file was changed or corrupted)")
    v.ok(f"manifest: {len(manifest.get('outputs', {}))} outputs hashed")


def check_provenance(out: Path, sizes, v: Verdict) -> None:
    """One row per sequence, ``doc`` in order, ``tokens`` the sizes, ``token_start`` their
    running sum: checked a row group at a time."""
    path = out / PROVENANCE
    if not path.exists():
        v.bad(f"{PROVENANCE}: missing")
        return
    pf = pq.ParquetFile(path)
    if pf.metadata.num_rows != len(sizes):
        v.bad(f"{PROVENANCE}: {pf.metadata.num_rows} rows for {len(sizes)} sequences in the .idx")
        return
    row, token, wrong = 0, 0, {"doc": 0, "tokens": 0, "token_start": 0}
    # A row group at a time (pileprep writes them of a fixed 2^20 rows): iter_batches reads
    # ahead and held 1.4 GiB at Pile scale.
    for g in range(pf.metadata.num_row_groups):
        batch = pf.read_row_group(g, columns=["doc", "tokens", "token_start"])
        n = batch.num_rows
        want = indexed.rows(sizes, row, row + n).astype(np.int64)
        tokens = batch.column("tokens").to_numpy().astype(np.int64)
        starts = np.cumsum(tokens) - tokens + token
        wrong["doc"] += int((batch.column("doc").to_numpy() != np.arange(row, row + n)).sum())
        wrong["tokens"] += int((tokens != want).sum())
        wrong["token_start"] += int((batch.column("token_start").to_numpy() != starts).sum())
        row, token = row + n, token + int(tokens.sum())
    if wrong["doc"]:
        v.bad(f"{PROVENANCE}: doc column is not 0..{len(sizes) - 1}")
    if wrong["tokens"]:
        v.bad(f"{PROVENANCE}: token counts differ from the .idx sizes at {wrong['tokens']} documents")
    if wrong["token_start"]:
        v.bad(f"{PROVENANCE}: token_start is not the running sum of tokens")
    v.ok(f"{PROVENANCE}: {row:,} rows match the index")


def _fingerprint(values, chunk: int | None = None) -> int:
    """A multiset hash (sum of mixed values mod 2^64): equal for equal multisets, and two
    different ones collide with probability ~2^-64. Lets a permutation be checked a chunk at
    a time, without counting every value at once."""
    total = np.uint64(0)
    with np.errstate(over="ignore"):
        for _, part in indexed.chunks(values, chunk or _CHUNK):
            total += _mix(part.astype(np.uint64)).sum(dtype=np.uint64)
    return int(total)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place (one temporary at a time: a chunk's memory, not five)."""
    x += np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(29)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(32)
    return x


def _is_permutation(values, n: int, times: int = 1) -> bool:
    """``values`` holds each of 0..n-1 exactly ``times`` times (length and fingerprint)."""
    if len(values) != n * times:
        return False
    whole = _fingerprint(np.arange(n, dtype=np.int64)) if n <= _CHUNK else \
        _fingerprint(_Range(n))
    return _fingerprint(values) == (whole * times) % (1 << 64)


class _Range:
    """``arange(n)`` sliced lazily, for fingerprints of long ranges."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: slice) -> np.ndarray:
        a, b, _ = key.indices(self.n)
        return np.arange(a, b, dtype=np.int64)


def _walks_the_stream(doc_idx, sample_idx, sizes, seq_length: int) -> bool:
    """Every sample starts ``seq_length`` tokens after the one before, inside its document,
    with a monotone document index: checked by walking doc_idx a chunk at a time, the sizes
    of each chunk's documents gathered a block of ``sizes`` at a time (``indexed.gather``)."""
    if sample_idx.ndim != 2 or sample_idx.shape[1] != 2 or not len(sample_idx):
        return False
    bisect = indexed.FileArray.of(sample_idx)  # a few rows per chunk: read, not mapped
    k, base, prev = 0, 0, None
    for lo, docs in indexed.chunks(doc_idx, _WALK):
        lengths = indexed.gather(sizes, docs, _CHUNK).astype(np.int64)
        del docs
        starts = np.cumsum(lengths)
        starts -= lengths
        starts += base
        # The samples starting in this chunk: a run, since the first column is monotone (where
        # it is not, a sample lands in the wrong chunk and its position check fails).
        end = max(k, last_at_most(bisect, lo + len(lengths) - 1) + 1) if k < len(sample_idx) else k
        if end > k:
            prev = _last_step(indexed.rows(sample_idx, k, end), lo, lengths, starts, prev, seq_length)
            if prev is None:
                return False
        k = end
        base = int(starts[-1] + lengths[-1]) if len(lengths) else base
    return k == len(sample_idx)


def _last_step(block: np.ndarray, lo: int, lengths: np.ndarray, starts: np.ndarray,
               prev: int | None, seq_length: int) -> int | None:
    """The stream position of the last sample of ``block`` (rows of sample_idx whose documents
    are doc_idx entries from ``lo``) if every sample lies inside its document and starts
    ``seq_length`` after the one before (the first after position ``prev``); None if not."""
    block = np.asarray(block, np.int64)
    local, offset = block[:, 0] - lo, block[:, 1]
    if (local < 0).any() or (local >= len(lengths)).any() or (offset < 0).any() \
            or (offset >= lengths[local]).any():
        return None
    pos = starts[local] + offset
    steps = np.diff(pos, prepend=prev) if prev is not None else np.diff(pos)
    return None if (steps != seq_length).any() else int(pos[-1])


def check_schedule(prefix: Path, cfg: ScheduleConfig, sizes, v: Verdict) -> None:
    """The three arrays are consistent with the dataset; every check reads a chunk at a time."""
    label = f"schedule {schedule_files.label(prefix, cfg)}"
    missing = [p.name for p in schedule_files.paths(prefix, cfg).values() if not p.exists()]
    if missing:
        v.bad(f"{label}: missing {', '.join(missing)}")
        return
    try:
        s = schedule_files.load(prefix, cfg)
    except (PilePrepError, OSError, ValueError) as exc:  # a file too damaged for numpy to open
        v.bad(f"{label}: unreadable ({exc})")
        return
    if not _is_permutation(s.doc_idx, len(sizes), s.epochs):
        v.bad(f"{label}: doc_idx is not {s.epochs} permutation(s) of the {len(sizes)} documents")
        return
    if not _walks_the_stream(s.doc_idx, s.sample_idx, sizes, cfg.seq_length):
        v.bad(f"{label}: sample_idx is not a monotone walk of seq_length steps over the documents")
    n = len(s.sample_idx) - 1
    if not _is_permutation(s.shuffle_idx, n):
        v.bad(f"{label}: shuffle_idx is not a permutation of the {n} samples")
    for naming in NAMINGS[1:]:
        for kind, alias in schedule_files.paths(prefix, cfg, naming).items():
            target = schedule_files.paths(prefix, cfg)[kind]
            # a link (one copy of the bytes), or a copy of the same bytes (a copied directory)
            if not alias.exists() or not (os.path.samefile(alias, target)
                                          or filecmp.cmp(alias, target, shallow=False)):
                v.bad(f"{label}: {alias.name} (GPT-NeoX {naming}'s name) does not hold "
                      f"{target.name}'s bytes")
    v.ok(f"{label}: {n:,} samples over {s.epochs} epoch(s)")


def check_adopted(adopted: dict, v: Verdict) -> None:
    """The published files an adopted dataset reads still have the sizes they had."""
    changed = []
    for f in adopted["files"]:
        path = Path(adopted["from"]) / f["name"] if Path(adopted["from"]).is_dir() \
            else Path(adopted["from"]).parent / f["name"]
        if path.exists() and path.stat().st_size != f["bytes"]:
            changed.append(f["name"])
    if changed:
        v.bad(f"adopted files changed size since adopt: {', '.join(changed[:5])}")
    else:
        v.ok(f"adopted from {adopted['from']} ({adopted['layout']}, "
             f"{'hashes checked' if adopted['hashes_checked'] else 'no hash list'})")


def verify(out_dir: str | Path) -> Verdict:
    out = Path(out_dir)
    v = Verdict()
    if (out / STAGING / JOURNAL).exists():
        v.bad(f"{STAGING}: an interrupted build left outputs half moved; run it again")
    if not (out / MANIFEST).exists():
        v.bad(f"{MANIFEST}: missing (not a finished pileprep build)")
        return v
    manifest = atomic.read_json(out / MANIFEST)
    check_manifest(out, manifest, v)
    prefix = dataset_prefix(out, manifest["settings"]["pack"]["name"])
    index = check_dataset(prefix, v)
    sizes = None
    if index is not None:
        sizes = index.sizes  # memory-mapped: every check below reads it a chunk at a time
        check_provenance(out, sizes, v)
        for cfg in schedule_files.recorded(out):
            check_schedule(prefix, cfg, sizes, v)
    if "adopted" in manifest:
        check_adopted(manifest["adopted"], v)
    if (out / REPORT).exists():
        rep = atomic.read_json(out / REPORT)
        if rep.get("kind") == "adopted":
            if sizes is not None and rep["documents"] != len(sizes):
                v.bad(f"{REPORT}: {rep['documents']} documents, the dataset has {len(sizes)}")
            return v
        gap = accounting_gap(rep)
        if gap:
            v.bad(f"{REPORT}: {gap}")
        elif sizes is not None and rep["kept"] != len(sizes):
            v.bad(f"{REPORT}: kept = {rep['kept']} but the dataset has {len(sizes)} documents")
        else:
            v.ok(f"{REPORT}: every line accounted for")
    return v
