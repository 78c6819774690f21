"""Saved schedules: the three ``.npy`` arrays under GPT-NeoX's names, their metadata, and the list
of schedules a build holds (``schedules.json``).

Each schedule is written once, under current GPT-NeoX's names, and linked under GPT-NeoX v1.0's
names (Pythia's trainer; a hard link, or a relative symlink where the file system has none), so
either trainer loads it without a second copy of the bytes; readers find it under either name.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from pileprep.core import atomic, faults
from pileprep.core.config import ScheduleConfig
from pileprep.core.errors import FormatError, NotFoundError
from pileprep.core.files import NAMINGS, SCHEDULES, schedule_paths, schedule_prefix
from pileprep.core.progress import log
from pileprep.formats.indexed import IndexedDataset
from pileprep.training.schedule import Schedule, build, total_tokens


def paths(dataset_prefix: str | Path, cfg: ScheduleConfig, naming: str = "neox") -> dict[str, Path]:
    return schedule_paths(dataset_prefix, cfg.num_samples, cfg.seq_length, cfg.seed, naming)


def meta_path(dataset_prefix: str | Path, cfg: ScheduleConfig) -> Path:
    return Path(schedule_prefix(dataset_prefix, cfg.num_samples, cfg.seq_length, cfg.seed) + ".json")


def label(dataset_prefix: str | Path, cfg: ScheduleConfig) -> str:
    return Path(schedule_prefix(Path(dataset_prefix).name, cfg.num_samples, cfg.seq_length,
                                cfg.seed)).name


def link_other_names(dataset_prefix: str | Path, cfg: ScheduleConfig) -> dict[str, Path]:
    """Link the schedule's files under every other naming; return the aliases."""
    files = paths(dataset_prefix, cfg)
    aliases = {}
    for naming in NAMINGS[1:]:
        for kind, alias in paths(dataset_prefix, cfg, naming).items():
            atomic.link(files[kind], alias)
            aliases[f"{naming}:{kind}"] = alias
    return aliases


def find(dataset_prefix: str | Path, cfg: ScheduleConfig) -> dict[str, Path] | None:
    """The schedule's three files under the first naming that has them all, or None."""
    for naming in NAMINGS:
        files = paths(dataset_prefix, cfg, naming)
        if all(p.exists() for p in files.values()):
            return files
    return None


def save(schedule: Schedule, dataset_prefix: str | Path) -> dict[str, Path]:
    """Write the three ``.npy`` files (atomically) under GPT-NeoX's names, and link them under
    GPT-NeoX v1.0's; return every path written."""
    files = paths(dataset_prefix, schedule.cfg)
    for key, arr in (("doc", schedule.doc_idx), ("sample", schedule.sample_idx),
                     ("shuffle", schedule.shuffle_idx)):
        atomic.save_npy(files[key], arr)
    meta = {**dataclasses.asdict(schedule.cfg),
            "num_samples": schedule.cfg.num_samples, "epochs": schedule.epochs,
            "tokens_per_epoch": schedule.tokens_per_epoch,
            "samples": int(schedule.sample_idx.shape[0] - 1),
            "files": {k: p.name for k, p in files.items()}}
    atomic.write_json(meta_path(dataset_prefix, schedule.cfg), meta)
    aliases = link_other_names(dataset_prefix, schedule.cfg)
    return {**files, **aliases}


def record(out_dir: str | Path, cfg: ScheduleConfig) -> None:
    path = Path(out_dir) / SCHEDULES
    entries = atomic.read_json(path) if path.exists() else []
    entry = dataclasses.asdict(cfg)
    atomic.write_json(path, [e for e in entries if e != entry] + [entry])


def recorded(out_dir: str | Path) -> list[ScheduleConfig]:
    """The schedules a build holds, oldest first."""
    path = Path(out_dir) / SCHEDULES
    return [ScheduleConfig(**e) for e in atomic.read_json(path)] if path.exists() else []


def build_for_dataset(out_dir: str | Path, prefix: str | Path, cfg: ScheduleConfig,
                      quiet: bool = False) -> dict[str, str]:
    """Build, save and record the schedule of a packed dataset; return ``{file: sha256}``."""
    t0 = time.monotonic()
    sizes = IndexedDataset(prefix).sizes
    _warn_if_repeated(int(sizes.sum()), cfg)
    s = build(sizes, cfg)
    files = save(s, prefix)
    faults.checkpoint("schedule")
    record(out_dir, cfg)
    log(f"schedule: {s.epochs} epoch(s), {len(s.sample_idx) - 1:,} samples of {cfg.seq_length + 1} "
        f"tokens for {cfg.train_iters:,} steps x {cfg.batch_size} in {time.monotonic() - t0:.1f} s",
        quiet)
    hashes = {p.name: atomic.sha256_file(p) for k, p in files.items() if ":" not in k}
    for key, alias in files.items():  # an alias has its target's bytes: hash them once
        if ":" in key:
            hashes[alias.name] = hashes[files[key.split(":")[1]].name]
    return hashes


REPEATS_WARNED = 100  # a schedule that repeats the dataset more than this is likely a mistake


def _warn_if_repeated(tokens: int, cfg: ScheduleConfig) -> None:
    """Say so (even with --quiet) when the schedule repeats the dataset many times: Pythia's
    default schedule on a test corpus makes gigabytes of index files in a long minute."""
    needed = cfg.train_iters * cfg.batch_size * cfg.seq_length
    if tokens and needed > REPEATS_WARNED * tokens:
        log(f"warning: {cfg.train_iters:,} steps x {cfg.batch_size} sequences of {cfg.seq_length} "
            f"tokens repeat this dataset's {tokens:,} tokens ~{needed // tokens:,} times: the "
            "schedule files will be large; for a small corpus give --train-iters (or "
            "--no-schedule)", False)


def load(dataset_prefix: str | Path, cfg: ScheduleConfig, sizes=None) -> Schedule:
    """Memory-map a saved schedule, found under either naming; a clear error if it was not built
    for these settings. ``sizes`` (the dataset's document sizes) stands in for a missing
    summary file: index maps put there by hand, under either name, load too."""
    files = find(dataset_prefix, cfg)
    if files is None:
        missing = [p.name for p in paths(dataset_prefix, cfg).values() if not p.exists()]
        raise NotFoundError(f"no schedule for seq_length={cfg.seq_length} batch_size={cfg.batch_size} "
                            f"train_iters={cfg.train_iters} seed={cfg.seed}: missing {', '.join(missing)}"
                            " (run `pileprep schedule OUT_DIR ...` with these settings)")
    try:
        arrs = {k: np.load(p, mmap_mode="r", allow_pickle=False) for k, p in files.items()}
    except ValueError as exc:
        raise FormatError(f"schedule {label(dataset_prefix, cfg)}: unreadable ({exc})") from None
    meta = meta_path(dataset_prefix, cfg)
    if meta.exists():
        m = atomic.read_json(meta)
        epochs, tokens = m["epochs"], m["tokens_per_epoch"]
    elif sizes is not None and len(sizes):
        epochs, tokens = len(arrs["doc"]) // len(sizes), total_tokens(sizes)
    else:
        raise NotFoundError(f"schedule {label(dataset_prefix, cfg)}: no summary file {meta.name}")
    return Schedule(arrs["doc"], arrs["sample"], arrs["shuffle"], cfg, epochs, tokens)
