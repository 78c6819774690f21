"""What a dedup run found, handed from the dedup stage to pack and the reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pileprep.formats.parts import Partition


@dataclass
class DedupResult:
    removed: np.ndarray  # stages.REMOVED_ROW, sorted by gid
    offsets: np.ndarray  # first gid of each partition
    signature_paths: list[Path]
    stats: dict
    fingerprint: str
    partitions: list[Partition] = field(default_factory=list)
    removed_by_subset: dict[str, list[int]] = field(default_factory=dict)  # docs, tokens, bytes
