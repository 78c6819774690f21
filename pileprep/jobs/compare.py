"""The compare job (``pileprep compare PRESHUFFLED OTHER``): prove that a preshuffled dataset's
items are another dataset's training samples, item n = sample n, token for token.

Pythia publishes its training data twice: the documents with their index maps
(``*_pile_idxmaps``), and the samples those give, in training order (``*-pythia-preshuffled``).
Their equality is what links a preshuffled item to its documents and sources: once proven, the
preshuffled dataset's ``order_link.json`` names the other dataset and schedule, and every query
of documents on it is answered through them (nothing is copied).

The check is Dask tasks over ranges of items (resumable, each holding ``CHUNK_ITEMS`` items of
both sides at a time), so it runs at disk speed on any number of cores.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pileprep.core import atomic
from pileprep.core.config import ClusterConfig, ScheduleConfig, fingerprint
from pileprep.core.errors import ConfigError
from pileprep.core.files import ORDER_LINK, dataset_prefix
from pileprep.core.outdir import OutputDir
from pileprep.core.progress import log
from pileprep.formats.manifest import Manifest, entry
from pileprep.formats.suffix import data_identity
from pileprep.runner.dask_runner import Runner
from pileprep.runner.tasks import Stage, Task
from pileprep.training.order import (TrainingOrder, dataset_name, link_identity, preshuffled,
                                     resolve_config)

ITEMS_PER_TASK = 1 << 16  # items compared by one task (~270 MB of tokens a side at Pythia's L)
CHUNK_ITEMS = 1 << 11  # items held at once, per side (~8 MB at L = 2048)
COMPARE_FORMAT = 1


def compare_items(preshuffled_dir: str, other_dir: str, other: dict, lo: int, hi: int
                  ) -> list[int] | None:
    """``[item, token]`` of the first difference among items ``lo .. hi-1``, or None."""
    pre = TrainingOrder(preshuffled_dir)
    ref = TrainingOrder(other_dir, ScheduleConfig(**other))
    for a in range(lo, hi, CHUNK_ITEMS):
        n = np.arange(a, min(a + CHUNK_ITEMS, hi))
        mine, theirs = pre.sample_array(n), ref.sample_array(n)
        if not np.array_equal(mine, theirs):
            item, token = np.argwhere(mine != theirs)[0]
            return [int(n[item]), int(token)]
    return None


def other_schedule(other_dir: str | Path, seq_length: int, items: int,
                   given: dict | None = None) -> ScheduleConfig:
    """The other dataset's schedule the items are checked against: the one ``given`` names
    (settings not given: its newest), which must have the items' sequence length and at least
    as many samples."""
    cfg = resolve_config(other_dir, **(given or {}))
    if cfg.seq_length != seq_length:
        raise ConfigError(f"{other_dir}'s schedule has schedule.seq_length {cfg.seq_length}, the "
                          f"preshuffled items {seq_length + 1} tokens; build or adopt the "
                          f"schedule of seq_length {seq_length} (pileprep schedule)")
    if cfg.num_samples < items:
        raise ConfigError(f"{other_dir}'s schedule has {cfg.num_samples:,} samples, fewer than "
                          f"the {items:,} preshuffled items")
    return cfg


def compare(preshuffled_dir: str | Path, other_dir: str | Path, cluster: ClusterConfig,
            quiet: bool = False, schedule: dict | None = None) -> dict:
    """``{"items", "equal", "first_difference"}``; when equal, the link is written.
    ``schedule``: settings naming the other dataset's schedule (default: its newest)."""
    items = preshuffled(preshuffled_dir)
    if items is None:
        raise ConfigError(f"{preshuffled_dir} is not a preshuffled dataset (adopt it with "
                          "--preshuffled)")
    cluster.validate()
    n = items["items"]
    other = other_schedule(other_dir, items["seq_length"], n, schedule)
    with OutputDir(preshuffled_dir, "compare", quiet) as out:
        # What the result holds for: both datasets' files and the schedule, as they are now.
        identity = [link_identity(TrainingOrder(other_dir, other)),
                    data_identity(dataset_prefix(out.path, dataset_name(out.path)))]
        work = out.work / f"compare-{fingerprint(COMPARE_FORMAT, identity, n)}"
        work.mkdir(parents=True, exist_ok=True)
        tasks = [Task(name=f"compare {lo}", stage=Stage.COMPARE, fn=compare_items,
                      kwargs=dict(preshuffled_dir=str(out.path), other_dir=str(other_dir),
                                  other=dataclasses.asdict(other), lo=lo,
                                  hi=min(lo + ITEMS_PER_TASK, n)),
                      done=work / f"{lo:012d}.done.json", inputs=identity,
                      weight=(min(lo + ITEMS_PER_TASK, n) - lo) * (other.seq_length + 1))
                 for lo in range(0, n, ITEMS_PER_TASK)]
        with Runner(cluster, quiet) as runner:
            found = [r for r in runner.run(tasks, "compare") if r is not None]
        result = _result(n, other, found)
        _record(out, other_dir, other, result, identity[0])
        out.clean(False, work)
    log(f"compare: {n:,} items against {other_dir} ({'equal' if result['equal'] else 'differ'})",
        quiet)
    return result


def _result(items: int, other: ScheduleConfig, found: list[list[int]]) -> dict:
    result = {"items": items, "schedule": dataclasses.asdict(other), "equal": not found,
              "first_difference": None}
    if found:
        item, token = min(found)
        result["first_difference"] = {"item": item, "token": token}
    return result


def _record(out: OutputDir, other_dir: str | Path, other: ScheduleConfig, result: dict,
            identity: dict) -> None:
    """Equal: the link, in the manifest's outputs. Different: no link (an old one is unlisted
    by the new manifest first, then removed)."""
    manifest = Manifest.from_json(out.manifest)
    stage = out.stage()
    if result["equal"]:
        atomic.write_json(stage / ORDER_LINK, {"dataset": str(Path(other_dir).resolve()),
                                               "schedule": dataclasses.asdict(other),
                                               "identity": identity,
                                               "items_compared": result["items"]})
        manifest.outputs[ORDER_LINK] = entry(stage / ORDER_LINK)
    else:
        manifest.outputs.pop(ORDER_LINK, None)
    out.commit(stage, manifest.to_json())
    if not result["equal"]:
        (out.path / ORDER_LINK).unlink(missing_ok=True)
