"""The pack stage: merge token parts, in global ``(source, line)`` order, into the final files.

Parts are already in the dataset dtype, so the ``.bin`` is a streaming byte copy; the ``.idx`` is
written from the parts' sizes in two streaming passes; the provenance table is concatenated
with global ``doc`` and ``token_start`` columns. Each output is written to a temporary name and
renamed only when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pileprep.core import atomic, faults
from pileprep.core.files import data_path, dataset_prefix, index_path
from pileprep.formats import indexed, provenance
from pileprep.formats.parts import TokenPart


def pack(parts: Sequence[TokenPart], out_dir: str | Path, name: str, dtype) -> dict[str, str]:
    """Write ``.bin``, ``.idx`` and provenance; return ``{file name: sha256}``."""
    prefix = dataset_prefix(out_dir, name)
    hashes: dict[str, str] = {}
    count = sum(p.docs for p in parts)

    bin_path = data_path(prefix)
    with atomic.atomic_path(bin_path) as tmp, open(tmp, "wb") as f:
        hashes[bin_path.name] = indexed.copy_concat([p.bin for p in parts], f)
    faults.checkpoint("pack")

    idx_path = index_path(prefix)
    with atomic.atomic_path(idx_path) as tmp, open(tmp, "wb") as f:
        hashes[idx_path.name] = indexed.write_index(
            f, dtype, count, lambda: (provenance.part_sizes(p.prov) for p in parts))

    prov_path = Path(out_dir) / provenance.FILE_NAME
    with atomic.atomic_path(prov_path) as tmp:
        hashes[prov_path.name] = provenance.merge([p.prov for p in parts], tmp)
    return hashes


def concat_text_files(sources: Sequence[str | Path], target: str | Path) -> str:
    """Concatenate small text files (per-shard rejects) into one, atomically; return sha256."""
    with atomic.atomic_path(target) as tmp, open(tmp, "wb") as f:
        return indexed.copy_concat(sources, f)
