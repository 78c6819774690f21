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

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from . import atomic, indexed, provenance, schedule as sched
from .config import ScheduleConfig
from .report import MANIFEST, REPORT


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def bad(self, what: str) -> None:
        self.problems.append(what)

    def ok(self, what: str) -> None:
        self.checked.append(what)


def _read_index(path: Path, v: Verdict):
    data = path.read_bytes()
    if len(data) < indexed.HEADER_BYTES or data[:len(indexed.MAGIC)] != indexed.MAGIC:
        v.bad(f"{path.name}: not an MMIDIDX index (bad magic or too short)")
        return None
    version, code, count, doc_count = struct.unpack_from("<QBQQ", data, len(indexed.MAGIC))
    if version != indexed.VERSION:
        v.bad(f"{path.name}: version {version}, expected {indexed.VERSION}")
    if code not in indexed.DTYPE_CODES:
        v.bad(f"{path.name}: unknown dtype code {code}")
        return None
    expected = indexed.HEADER_BYTES + count * 4 + count * 8 + doc_count * 8
    if len(data) != expected:
        v.bad(f"{path.name}: {len(data)} bytes, but its header ({count} sequences, {doc_count} "
              f"document index entries) implies {expected}")
        return None
    off = indexed.HEADER_BYTES
    sizes = np.frombuffer(data, np.int32, count, off)
    pointers = np.frombuffer(data, np.int64, count, off + 4 * count)
    doc_idx = np.frombuffer(data, np.int64, doc_count, off + 12 * count)
    return np.dtype(indexed.DTYPE_CODES[code]), sizes, pointers, doc_idx


def check_dataset(prefix: Path, v: Verdict):
    """Index and data file of one dataset; returns the sizes when the index is readable."""
    idx, binf = indexed.index_path(prefix), indexed.data_path(prefix)
    for p in (idx, binf):
        if not p.exists():
            v.bad(f"{p.name}: missing")
            return None
    parsed = _read_index(idx, v)
    if parsed is None:
        return None
    dtype, sizes, pointers, doc_idx = parsed
    if (sizes <= 0).any():
        v.bad(f"{idx.name}: {(sizes <= 0).sum()} sequences with size <= 0")
    expect_ptr = np.concatenate([[0], np.cumsum(sizes.astype(np.int64))[:-1]]) * dtype.itemsize
    if len(sizes) and not np.array_equal(pointers, expect_ptr):
        first = int(np.flatnonzero(pointers != expect_ptr)[0])
        v.bad(f"{idx.name}: pointer of sequence {first} is {pointers[first]}, sizes say {expect_ptr[first]}")
    if not np.array_equal(doc_idx, np.arange(len(sizes) + 1)):
        v.bad(f"{idx.name}: document index is not 0..{len(sizes)}")
    want = int(sizes.astype(np.int64).sum()) * dtype.itemsize
    have = binf.stat().st_size
    if have != want:
        v.bad(f"{binf.name}: {have} bytes, the index says {want} ({'truncated' if have < want else 'too long'})")
    v.ok(f"{idx.name}: {len(sizes):,} sequences, {want // dtype.itemsize:,} tokens of {dtype}")
    return sizes


def check_manifest(out: Path, manifest: dict, v: Verdict) -> None:
    for name, meta in manifest.get("outputs", {}).items():
        path = out / name
        if not path.exists():
            v.bad(f"{name}: listed in the manifest but missing")
        elif path.stat().st_size != meta["bytes"]:
            v.bad(f"{name}: {path.stat().st_size} bytes, the manifest says {meta['bytes']}")
        elif provenance.sha256_file(path) != meta["sha256"]:
            v.bad(f"{name}: sha256 differs from the manifest (the file was changed or corrupted)")
    v.ok(f"manifest: {len(manifest.get('outputs', {}))} outputs hashed")


def check_provenance(out: Path, sizes: np.ndarray, v: Verdict) -> None:
    path = out / provenance.FILE_NAME
    if not path.exists():
        v.bad(f"{provenance.FILE_NAME}: missing")
        return
    t = pq.read_table(path, columns=["doc", "tokens", "token_start"])
    if t.num_rows != len(sizes):
        v.bad(f"{provenance.FILE_NAME}: {t.num_rows} rows for {len(sizes)} sequences in the .idx")
        return
    tokens = t.column("tokens").to_numpy().astype(np.int64)
    if not np.array_equal(t.column("doc").to_numpy(), np.arange(len(sizes))):
        v.bad(f"{provenance.FILE_NAME}: doc column is not 0..{len(sizes) - 1}")
    if not np.array_equal(tokens, sizes):
        v.bad(f"{provenance.FILE_NAME}: token counts differ from the .idx sizes at "
              f"{int((tokens != sizes).sum())} documents")
    starts = np.concatenate([[0], np.cumsum(tokens)[:-1]]) if len(tokens) else tokens
    if not np.array_equal(t.column("token_start").to_numpy(), starts):
        v.bad(f"{provenance.FILE_NAME}: token_start is not the running sum of tokens")
    v.ok(f"{provenance.FILE_NAME}: {t.num_rows:,} rows match the index")


def check_schedule(prefix: Path, cfg: ScheduleConfig, sizes: np.ndarray, v: Verdict) -> None:
    label = f"schedule {cfg.file_prefix(prefix.name)}"
    missing = [p.name for p in cfg.paths(prefix).values() if not p.exists()]
    if missing:
        v.bad(f"{label}: missing {', '.join(missing)}")
        return
    try:
        s = sched.load(prefix, cfg)
    except Exception as exc:  # a file too damaged for numpy to open
        v.bad(f"{label}: unreadable ({exc})")
        return
    n_docs, doc_idx = len(sizes), np.asarray(s.doc_idx)
    if len(doc_idx) != s.epochs * n_docs or (n_docs and not np.array_equal(
            np.bincount(doc_idx, minlength=n_docs), np.full(n_docs, s.epochs))):
        v.bad(f"{label}: doc_idx is not {s.epochs} permutation(s) of the {n_docs} documents")
        return
    sample = np.asarray(s.sample_idx)
    ok = (sample.ndim == 2 and sample.shape[1] == 2 and (sample[:, 0] >= 0).all()
          and (sample[:, 0] < len(doc_idx)).all() and (np.diff(sample[:, 0]) >= 0).all())
    if ok:
        # Every sample spans seq_length + 1 tokens of the epoch-ordered stream.
        starts = np.concatenate([[0], np.cumsum(sizes[doc_idx].astype(np.int64))])
        pos = starts[sample[:, 0]] + sample[:, 1]
        ok = bool((np.diff(pos) == cfg.seq_length).all())
    if not ok:
        v.bad(f"{label}: sample_idx is not a monotone walk of seq_length steps over the documents")
    shuffle = np.asarray(s.shuffle_idx)
    if len(shuffle) != len(sample) - 1 or not np.array_equal(np.sort(shuffle), np.arange(len(shuffle))):
        v.bad(f"{label}: shuffle_idx is not a permutation of the {len(sample) - 1} samples")
    v.ok(f"{label}: {len(sample) - 1:,} samples over {s.epochs} epoch(s)")


def verify(out_dir: str | Path) -> Verdict:
    out = Path(out_dir)
    v = Verdict()
    if (out / atomic.STAGING / atomic.JOURNAL).exists():
        v.bad(f"{atomic.STAGING}: an interrupted build left outputs half moved; run it again")
    if not (out / MANIFEST).exists():
        v.bad(f"{MANIFEST}: missing (not a finished pileprep build)")
        return v
    manifest = atomic.read_json(out / MANIFEST)
    check_manifest(out, manifest, v)
    prefix = out / f"{manifest['settings']['pack']['name']}_text_document"
    sizes = check_dataset(prefix, v)
    if sizes is not None:
        sizes = sizes.astype(np.int64)
        check_provenance(out, sizes, v)
        entries = atomic.read_json(out / sched.SCHEDULES) if (out / sched.SCHEDULES).exists() else []
        for entry in entries:
            check_schedule(prefix, ScheduleConfig(**entry), sizes, v)
    if (out / REPORT).exists():
        rep = atomic.read_json(out / REPORT)
        total = rep["kept"] + rep["duplicates"] + sum(rep["rejected"].values())
        if total != rep["lines_read"]:
            v.bad(f"{REPORT}: kept + duplicates + rejected = {total}, lines_read = {rep['lines_read']}")
        elif sizes is not None and rep["kept"] != len(sizes):
            v.bad(f"{REPORT}: kept = {rep['kept']} but the dataset has {len(sizes)} documents")
        else:
            v.ok(f"{REPORT}: every line accounted for")
    return v
