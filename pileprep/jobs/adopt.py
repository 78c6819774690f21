"""``pileprep adopt``: take a published GPT-NeoX dataset (Pythia's) as it is, so every command
works on the data the models really saw.

A published dataset is a MMIDIDX prefix (``X.bin`` + ``X.idx``) or a directory of pieces
``NAME-00000-of-000NN.bin`` (EleutherAI cuts the deduplicated Pile into 5,000,000,000-byte
pieces; ``of`` names the last piece's number) beside ``NAME.idx``. Adopting never rewrites or
copies the tokens unless ``copy`` is asked for: the index and a single ``.bin`` are linked into
OUT_DIR, and pieces are read in place through ``<prefix>.bin.pieces.json`` (a copy of the
deduplicated Pile would be another 400 GB; GPT-NeoX itself needs one ``.bin``, which ``copy``
joins). Published index maps (``--index-maps``) are checked against the dataset and linked under
both GPT-NeoX namings. Provenance starts unknown (``match`` = none) until raw text is aligned
(:mod:`pileprep.jobs.align`).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pileprep.core import atomic
from pileprep.core.outdir import OutputDir
from pileprep.core.config import HEADROOM, PackConfig, ScheduleConfig
from pileprep.core.errors import ConfigError, FormatError, InputError, IntegrityError
from pileprep.core.files import (DOCUMENT_SUFFIX, DUPLICATES, ITEM_SOURCES, ITEM_SOURCES_NAMES,
                                 ITEM_SOURCES_OFFSETS, MANIFEST, PROVENANCE, REJECTS,
                                 ORDER_LINK, REPORT, SCHEDULES, data_path, dataset_prefix, index_path,
                                 pieces_path)
from pileprep.core.progress import Progress, log
from pileprep.formats.manifest import Manifest, entries
from pileprep.formats import indexed, provenance
from pileprep.checks.verify import Verdict, check_schedule
from pileprep.training import schedule_files
from pileprep.training.schedule import num_epochs

PIECE = re.compile(r"^(?P<stem>.+)-(?P<i>\d+)-of-(?P<n>\d+)\.bin$")
INDEX_MAP = re.compile(r"^(?P<prefix>.+)_train_0_indexmap_(?P<ns>\d+)ns_(?P<sl>\d+)sl_(?P<seed>\d+)s"
                       r"(?P<packed>_packedpi_ac)?_(?P<kind>doc|sample|shuffle)_idx\.npy$")
_CHUNK = 1 << 22  # index entries checked or written at once
_HASH_BLOCK = 1 << 24


@dataclass
class Published:
    """The files of a published dataset: its index and its data, in order."""

    stem: str  # the published prefix's file name, e.g. pile_0.87_deduped_text_document
    index: Path
    data: list[Path]
    last_named: int | None = None  # the piece number "-of-N" names, when no piece has it

    @property
    def files(self) -> list[Path]:
        return [*self.data, self.index]


def locate(dataset: str | Path) -> Published:
    """The published dataset a path names: a prefix, its ``.bin``/``.idx``, or a directory
    holding one ``.idx`` with its ``.bin`` or its pieces."""
    path = Path(dataset)
    if path.is_dir():
        idxs = sorted(path.glob("*.idx"))
        if len(idxs) != 1:
            raise InputError(f"{path}: expected one .idx file, found "
                             f"{', '.join(p.name for p in idxs) or 'none'}")
        return _with_data(idxs[0])
    stem = path.with_suffix("") if path.suffix in (".bin", ".idx") else path
    if not index_path(stem).exists():
        raise InputError(f"{dataset}: no {index_path(stem).name} (give a MMIDIDX prefix, its "
                         ".idx, or a directory of pieces)")
    return _with_data(index_path(stem))


def _with_data(idx: Path) -> Published:
    stem = idx.name[:-len(".idx")]
    single = idx.with_name(f"{stem}.bin")
    found = {}
    for f in idx.parent.iterdir():
        m = PIECE.match(f.name)
        if m and m["stem"] == stem:
            found[int(m["i"])] = (int(m["n"]), f)
    if single.exists() and found:
        raise InputError(f"{idx.parent}: both {single.name} and pieces of it; keep one")
    if single.exists():
        return Published(stem, idx, [single])
    if not found:
        raise InputError(f"{idx.parent}: no {single.name} and no pieces {stem}-00000-of-NNNNN.bin")
    of = next(iter(found.values()))[0]
    return Published(stem, idx, _ordered_pieces(stem, found), None if of in found else of)


def _ordered_pieces(stem: str, found: dict[int, tuple[int, Path]]) -> list[Path]:
    """Pieces 0..N in order; ``of-N`` names the last piece (EleutherAI) or the count."""
    ofs = {n for n, _ in found.values()}
    if len(ofs) != 1:
        raise InputError(f"pieces of {stem} disagree on their total: -of-{sorted(ofs)}")
    of = ofs.pop()
    last = of if of in found or len(found) > of else of - 1
    missing = [i for i in range(last + 1) if i not in found]
    if missing:
        raise InputError(f"{stem}: missing piece(s) " + ", ".join(f"{i:05d}" for i in missing[:5])
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    extra = sorted(set(found) - set(range(last + 1)))
    if extra:
        raise InputError(f"{stem}: piece {extra[0]:05d} is beyond -of-{of:05d}")
    return [found[i][1] for i in range(last + 1)]


def read_hash_list(path: str | Path) -> dict[str, str]:
    """``{file name: sha256}`` from lines ``NAME SHA256`` (or ``SHA256  NAME``, sha256sum's)."""
    out = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InputError(f"--hashes {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise FormatError(f"--hashes {path}: not a text file of 'NAME SHA256' lines") from None
    for n, line in enumerate(lines, 1):
        words = line.replace("*", " ").split()
        if not words:
            continue
        digests = [w for w in words if re.fullmatch(r"[0-9a-fA-F]{64}", w)]
        if len(words) != 2 or len(digests) != 1:
            raise FormatError(f"{path}: line {n} is not 'NAME SHA256': {line[:80]!r}")
        name = words[0] if words[1] == digests[0] else words[1]
        out[Path(name).name] = digests[0].lower()
    return out


def check_hashes(pub: Published, hashes: dict[str, str], quiet: bool) -> dict[str, str]:
    """Hash every file of the dataset and compare; an IntegrityError names the first that
    differs. Returns ``{name: sha256}``."""
    names = {p.name for p in pub.files}
    unknown = sorted(set(hashes) - names)
    if unknown:
        raise InputError(f"--hashes names files that are not part of {pub.stem}: "
                         f"{', '.join(unknown[:5])}")
    unlisted = [p.name for p in pub.files if p.name not in hashes]
    if unlisted:
        raise InputError(f"--hashes has no hash for {', '.join(unlisted[:5])}")
    bar = Progress("hash", sum(p.stat().st_size for p in pub.files), len(pub.files), quiet=quiet,
                   unit="files")
    for p in pub.files:
        digest = atomic.sha256_file(p, on_block=lambda n: bar.update(nbytes=n))
        bar.update(items=1)
        if digest != hashes[p.name]:
            raise IntegrityError(f"{p.name}: sha256 {digest[:16]}… differs from the hash "
                                 f"list's {hashes[p.name][:16]}… (damaged or incomplete download)")
    bar.close()
    return {p.name: hashes[p.name] for p in pub.files}


def check_data(pub: Published) -> indexed.Index:
    """The index is readable and describes exactly the bytes of the data files."""
    index = indexed.Index(pub.index)
    have = sum(p.stat().st_size for p in pub.data)
    if have < index.data_bytes and pub.last_named is not None:  # EleutherAI: -of- names the last
        raise InputError(f"{pub.stem}: missing piece {pub.last_named:05d} (-of-{pub.last_named:05d} "
                         f"names the last piece; {have:,} of {index.data_bytes:,} bytes present)")
    if have != index.data_bytes:
        raise IntegrityError(f"{pub.index.name} describes {index.data_bytes:,} bytes of tokens, but "
                             f"the data file(s) hold {have:,}: they do not belong together")
    if len(index) and (int(index.pointers[0]) != 0):
        raise FormatError(f"{pub.index.name}: the first document does not start at byte 0")
    return index


def place_data(pub: Published, prefix: Path, copy: bool, quiet: bool) -> None:
    """The dataset's files under ``prefix`` in OUT_DIR: links, a piece list, or (``copy``) a
    joined ``.bin``."""
    atomic.link(pub.index.resolve(), index_path(prefix))
    if len(pub.data) == 1 and not copy:
        atomic.link(pub.data[0].resolve(), data_path(prefix))
    elif copy:
        bar = Progress("copy", sum(p.stat().st_size for p in pub.data), len(pub.data), quiet=quiet,
                       unit="files")
        with atomic.atomic_path(data_path(prefix)) as tmp, open(tmp, "wb") as f:
            indexed.copy_concat(pub.data, f)
        bar.update(nbytes=bar.total_bytes, items=len(pub.data))
        bar.close()
    else:
        atomic.write_json(pieces_path(prefix), {"pieces": [
            {"path": str(p.resolve()), "bytes": p.stat().st_size} for p in pub.data]})


PRESHUFFLED_STEM = "document"  # Pythia's preshuffled datasets: document.idx + document-*.bin


def preshuffled_items(pub: Published, index: indexed.Index, force: bool,
                      seq_length: int | None, batch_size: int) -> dict | None:
    """``{"seq_length", "batch_size", "items"}`` when the dataset is preshuffled (see
    :func:`adopt`), else None; a forced one whose items are not all L+1 tokens is refused,
    naming the first that is not."""
    if not len(index) or not (force or pub.stem == PRESHUFFLED_STEM):
        return None
    width = (seq_length if seq_length is not None else 2048) + 1 if force else int(index.sizes[0])
    for lo in range(0, len(index), _CHUNK):
        sizes = np.asarray(index.sizes[lo:lo + _CHUNK])
        odd = np.flatnonzero(sizes != width)
        if len(odd) and not force:
            return None  # items of several lengths: documents, not samples
        if len(odd):
            i = lo + int(odd[0])
            raise FormatError(f"{pub.index.name}: not a preshuffled dataset of {width}-token "
                              f"samples (--seq-length {width - 1}): item {i:,} has "
                              f"{int(sizes[odd[0]]):,} tokens")
    if width < 3:
        raise FormatError(f"{pub.index.name}: items of {width} tokens are no training samples")
    return {"seq_length": width - 1, "batch_size": batch_size, "items": len(index)}


def write_unknown_provenance(index: indexed.Index, path: Path) -> str:
    """Provenance with every source unknown: doc, tokens and token_start only."""
    with atomic.atomic_path(path) as tmp, pq.ParquetWriter(tmp, provenance.ALIGNED_SCHEMA,
                                                           compression="zstd") as w:
        token = 0
        for lo in range(0, len(index), _CHUNK):
            sizes = np.asarray(index.sizes[lo:lo + _CHUNK])
            w.write_table(provenance.aligned_chunk(lo, token, sizes), row_group_size=provenance.ROW_GROUP)
            token += int(sizes.astype(np.int64).sum())
        if not len(index):
            w.write_table(provenance.aligned_chunk(0, 0, np.zeros(0, np.int32)))
    return atomic.sha256_file(path)


# -- index maps ----------------------------------------------------------------------------------

@dataclass
class IndexMap:
    files: dict[str, Path]  # doc, sample, shuffle
    num_samples: int
    seq_length: int
    seed: int


def find_index_maps(directory: str | Path, stem: str) -> list[IndexMap]:
    """Complete index maps (all three files) in a directory, under either GPT-NeoX naming (one
    of each when both are there). Maps named after this dataset are taken when there are any,
    else every map (they are checked against the dataset either way)."""
    groups: dict[tuple, dict[tuple, dict[str, Path]]] = {}
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"--index-maps {directory}: not a directory")
    for f in sorted(d.iterdir()):
        m = INDEX_MAP.match(f.name)
        if m:
            key = (int(m["ns"]), int(m["sl"]), int(m["seed"]))
            naming = (m["prefix"], bool(m["packed"]))
            groups.setdefault(key, {}).setdefault(naming, {})[m["kind"]] = f
    maps = []
    for (ns, sl, seed), namings in sorted(groups.items()):
        complete = {n: files for n, files in namings.items() if len(files) == 3}
        ours = {n: files for n, files in complete.items() if n[0] == stem} or complete
        if ours:
            maps.append((any(n[0] == stem for n in ours), IndexMap(ours[min(ours)], ns, sl, seed)))
    named = [m for own, m in maps if own]
    if not maps:
        raise InputError(f"--index-maps {directory}: no complete index map "
                         "(<prefix>_train_0_indexmap_<N>ns_<L>sl_<S>s_{doc,sample,shuffle}_idx.npy)")
    return named or [m for _, m in maps]


def schedule_of(m: IndexMap, batch_size: int) -> ScheduleConfig:
    """The settings whose sample count GPT-NeoX names N: ``ceil(T * B * 1.005) = N``."""
    guess = int(m.num_samples / (batch_size * HEADROOM))
    for t in (guess - 1, guess, guess + 1):
        cfg = ScheduleConfig(m.seq_length, batch_size, max(t, 1), m.seed)
        if t >= 1 and cfg.num_samples == m.num_samples:
            cfg.validate()  # e.g. a map named _0sl_ or _1sl_
            return cfg
    raise ConfigError(f"index map for {m.num_samples} samples: no train-iters gives that with "
                      f"--batch-size {batch_size}; give the global batch size it was made for")


def check_index_map(m: IndexMap, index: indexed.Index) -> tuple[int, int]:
    """``(epochs, tokens_per_epoch)`` when the map was made for this dataset; FormatError if not."""
    try:
        arrays = {k: np.load(p, mmap_mode="r", allow_pickle=False) for k, p in m.files.items()}
    except (ValueError, OSError) as exc:  # a truncated download, not an .npy
        raise FormatError(f"index map {m.files['doc'].parent}: unreadable ({exc})") from None
    n_docs, name = len(index), m.files["doc"].name.rsplit("_doc_idx.npy", 1)[0]
    tokens = schedule_files.total_tokens(index.sizes)
    doc_idx, sample_idx, shuffle = arrays["doc"], arrays["sample"], arrays["shuffle"]
    epochs = len(doc_idx) // n_docs if n_docs else 0
    biggest = max((int(np.max(doc_idx[lo:lo + _CHUNK])) for lo in range(0, len(doc_idx), _CHUNK)),
                  default=-1)
    why = None
    if not n_docs or len(doc_idx) != epochs * n_docs or biggest >= n_docs:
        why = f"its document index has {len(doc_idx):,} entries up to {biggest:,}, the dataset {n_docs:,} documents"
    elif epochs != num_epochs(tokens, m.seq_length, m.num_samples):
        why = f"{epochs} epochs of doc_idx, but {m.num_samples:,} samples of this dataset need " \
              f"{num_epochs(tokens, m.seq_length, m.num_samples)}"
    elif len(sample_idx) - 1 != (epochs * tokens - 1) // m.seq_length or len(shuffle) != len(sample_idx) - 1:
        why = f"{len(sample_idx) - 1:,} samples, but {epochs} epoch(s) of this dataset's {tokens:,} tokens give " \
              f"{(epochs * tokens - 1) // m.seq_length:,}"
    if why:
        raise FormatError(f"index map {name} was made for another dataset: {why}")
    return epochs, tokens


def adopt_index_map(m: IndexMap, index: indexed.Index, prefix: Path, out: Path,
                    batch_size: int) -> ScheduleConfig:
    """Link a checked index map into OUT_DIR under both namings and record it."""
    cfg = schedule_of(m, batch_size)
    epochs, tokens = check_index_map(m, index)
    files = schedule_files.paths(prefix, cfg)
    for kind, target in files.items():
        atomic.link(m.files[kind].resolve(), target)
    samples = len(np.load(m.files["shuffle"], mmap_mode="r"))
    atomic.write_json(schedule_files.meta_path(prefix, cfg), {
        **dataclasses.asdict(cfg), "num_samples": cfg.num_samples, "epochs": epochs,
        "tokens_per_epoch": tokens, "samples": samples,
        "files": {k: p.name for k, p in files.items()}, "adopted_from": str(m.files["doc"].parent)})
    schedule_files.link_other_names(prefix, cfg)
    schedule_files.record(out, cfg)
    return cfg


# -- the command -------------------------------------------------------------------------------

def clear_previous(out: Path) -> None:
    """``--overwrite``: remove what the dataset already in ``out`` consists of (its data links,
    provenance, report, schedules, config fragments), so nothing of it is read with the new one."""
    old = dataset_prefix(out, atomic.read_json(out / MANIFEST)["settings"]["pack"]["name"]).name
    owned = {MANIFEST, REPORT, PROVENANCE, SCHEDULES, REJECTS, DUPLICATES, ORDER_LINK,
             ITEM_SOURCES, ITEM_SOURCES_OFFSETS, ITEM_SOURCES_NAMES}
    for p in out.iterdir():
        if (p.is_file() or p.is_symlink()) and (p.name.startswith(old) or p.name in owned
                                                or p.name.startswith("gpt_neox_")):
            p.unlink()


def default_name(stem: str) -> str:
    return stem[:-len(DOCUMENT_SUFFIX)] if stem.endswith(DOCUMENT_SUFFIX) else stem


def adopt(dataset: str | Path, out_dir: str | Path, name: str | None = None,
          hashes: str | Path | None = None, index_maps: str | Path | None = None,
          batch_size: int = 1024, copy: bool = False, overwrite: bool = False,
          quiet: bool = False, preshuffled: bool = False, seq_length: int | None = None) -> dict:
    """Adopt a published dataset into ``out_dir``; return the report. Nothing is written
    until every check has passed (a failed adopt leaves ``out_dir`` as it was).

    A *preshuffled* dataset (Pythia's ``*-pythia-preshuffled``: ``document.idx`` and its
    pieces) holds the training samples themselves, L+1 tokens each, in training order: it is
    taken as such when it is named ``document`` and every item has one length, or with
    ``preshuffled`` (every item must then be ``seq_length + 1`` tokens, 2049 by default)."""
    pub = locate(dataset)
    name = name or default_name(pub.stem)
    PackConfig(output=str(out_dir), name=name).validate()
    ScheduleConfig(batch_size=batch_size).validate()
    with OutputDir(out_dir, "adopt", quiet) as out:
        out.guard(lambda old: False, overwrite, "a dataset already")
        index = check_data(pub)
        items = preshuffled_items(pub, index, preshuffled, seq_length, batch_size)
        if items is not None and index_maps:
            raise ConfigError("a preshuffled dataset's order is its own: it takes no --index-maps")
        sha = check_hashes(pub, read_hash_list(hashes), quiet) if hashes else {}
        maps = find_index_maps(index_maps, pub.stem) if index_maps else []
        for m in maps:  # refuse a map for another dataset before anything is written
            schedule_of(m, batch_size)
            check_index_map(m, index)
        log(f"adopt: {pub.stem}: {len(index):,} " + (
            f"training samples of {items['seq_length'] + 1} tokens (preshuffled)" if items
            else "documents") + f" in {len(pub.data)} data file(s), {index.dtype}", quiet)
        return _write(dataset, pub, out, name, index, sha, maps, batch_size, copy, overwrite,
                      quiet, items)


def _write(dataset: str | Path, pub: Published, od: OutputDir, name: str, index: indexed.Index,
           sha: dict[str, str], maps: list[IndexMap], batch_size: int, copy: bool,
           overwrite: bool, quiet: bool, items: dict | None = None) -> dict:
    """Every check passed: stage the dataset, its provenance and schedules, and commit."""
    out = od.path
    stage = od.stage()
    prefix = dataset_prefix(stage, name)
    place_data(pub, prefix, copy, quiet)
    outputs = {PROVENANCE: write_unknown_provenance(index, stage / PROVENANCE)}
    schedules = [adopt_index_map(m, index, prefix, stage, batch_size) for m in maps]
    for m, cfg in zip(maps, schedules):  # the whole check verify makes: permutations, the walk
        v = Verdict()
        check_schedule(prefix, cfg, index.sizes, v)
        if v.problems:
            shutil.rmtree(stage, ignore_errors=True)
            problem = v.problems[0]
            kind = next((k for k in ("shuffle", "sample", "doc") if f"{k}_idx" in problem), "doc")
            raise FormatError(f"index map {m.files[kind]}: {problem.split(': ', 1)[-1]} "
                              "(a damaged or incomplete download?)")
    if overwrite and (out / MANIFEST).exists():
        clear_previous(out)
    tokens = schedule_files.total_tokens(index.sizes)
    report = {"kind": "adopted", "documents": len(index), "tokens": tokens,
              "alignment": None, "schedules": [dataclasses.asdict(s) for s in schedules],
              **({"preshuffled": items} if items else {})}
    adopted = {"from": str(Path(dataset).resolve()), "stem": pub.stem,
               "files": [{"name": p.name, "bytes": p.stat().st_size, "sha256": sha.get(p.name)}
                         for p in pub.files],
               "layout": "joined copy" if copy else ("pieces in place" if len(pub.data) > 1
                                                     else "linked"),
               "hashes_checked": bool(sha), **({"preshuffled": items} if items else {})}
    manifest = Manifest(index.dtype.name, {"pack": {"name": name}}, entries(stage, outputs), [],
                        adopted=adopted)
    atomic.write_json(stage / REPORT, report)
    od.commit(stage, manifest.to_json())
    return report

