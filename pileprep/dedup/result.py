"""What a dedup run found, handed from the dedup stage to pack and the reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pileprep.formats.parts import Partition, TokenPart


@dataclass
class DedupResult:
    removed: np.ndarray  # stages.REMOVED_ROW, sorted by gid
    offsets: np.ndarray  # first gid of each partition
    signature_paths: list[Path]
    stats: dict
    fingerprint: str
    partitions: list[Partition] = field(default_factory=list)
    removed_by_subset: dict[str, list[int]] = field(default_factory=dict)  # docs, tokens, bytes


@dataclass
class DroppedPart:
    """A token part less its removed documents (``apply.drop_task``): the part as packed (its
    provenance rewritten, its ``bin`` still the source part's), the documents, tokens and bytes
    removed per subset, and the kept tokens' bytes."""

    packed: TokenPart
    removed: dict[str, list[int]]
    nbytes: int

    @classmethod
    def from_json(cls, obj: dict) -> "DroppedPart":
        return cls(TokenPart.from_json(obj["packed"]), obj["removed"], obj["nbytes"])

    def to_json(self) -> dict:
        return {"packed": asdict(self.packed), "removed": self.removed, "nbytes": self.nbytes}

    def outputs(self) -> list[str]:
        return [self.packed.prov]  # the source part's .bin is deleted once written
