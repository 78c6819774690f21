"""Saved schedules: the three ``.npy`` arrays under GPT-NeoX's names, their metadata, and the list
of schedules a build holds (``schedules.json``).

Each schedule is written once, under current GPT-NeoX's names, and hard-linked under GPT-NeoX
v1.0's names (Pythia's trainer), so either trainer loads it without a second copy of the bytes;
readers find it under either name.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from pileprep.core import atomic, faults
from pileprep.core.config import ScheduleConfig
from pileprep.core.errors import FormatError, NotFoundError
from pileprep.core.files import SCHEDULES, schedule_paths, schedule_prefix
from pileprep.core.progress import log
from pileprep.formats.indexed import IndexedDataset
from pileprep.training.schedule import Schedule, build


def paths(dataset_prefix: str | Path, cfg: ScheduleConfig, naming: str = "neox") -> dict[str, Path]:
    return schedule_paths(dataset_prefix, cfg.num_samples, cfg.seq_length, cfg.seed, naming)


def meta_path(dataset_prefix: str | Path, cfg: ScheduleConfig) -> Path:
    return Path(schedule_prefix(dataset_prefix, cfg.num_samples, cfg.seq_length, cfg.seed) + ".json")


def label(dataset_prefix: str | Path, cfg: ScheduleConfig) -> str:
    return Path(schedule_prefix(Path(dataset_prefix).name, cfg.num_samples, cfg.seq_length,
                                cfg.seed)).name


def save(schedule: Schedule, dataset_prefix: str | Path) -> dict[str, Path]:
    """Write the three ``.npy`` files (atomically) under GPT-NeoX's names; return their paths."""
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
    return files


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
    s = build(sizes, cfg)
    files = save(s, prefix)
    faults.checkpoint("schedule")
    record(out_dir, cfg)
    log(f"schedule: {s.epochs} epoch(s), {len(s.sample_idx) - 1:,} samples of {cfg.seq_length + 1} "
        f"tokens for {cfg.train_iters:,} steps x {cfg.batch_size} in {time.monotonic() - t0:.1f} s",
        quiet)
    return {p.name: atomic.sha256_file(p) for p in files.values()}


def load(dataset_prefix: str | Path, cfg: ScheduleConfig) -> Schedule:
    """Memory-map a saved schedule; a clear error if it was not built for these settings."""
    files = paths(dataset_prefix, cfg)
    missing = [p.name for p in files.values() if not p.exists()]
    if missing:
        raise NotFoundError(f"no schedule for seq_length={cfg.seq_length} batch_size={cfg.batch_size} "
                            f"train_iters={cfg.train_iters} seed={cfg.seed}: missing {', '.join(missing)}"
                            " (run `pileprep schedule OUT_DIR ...` with these settings)")
    meta = atomic.read_json(meta_path(dataset_prefix, cfg))
    try:
        arrs = {k: np.load(p, mmap_mode="r", allow_pickle=False) for k, p in files.items()}
    except ValueError as exc:
        raise FormatError(f"schedule {label(dataset_prefix, cfg)}: unreadable ({exc})") from None
    return Schedule(arrs["doc"], arrs["sample"], arrs["shuffle"], cfg, meta["epochs"],
                    meta["tokens_per_epoch"])
