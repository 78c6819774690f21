"""``manifest.json``: what an output directory holds, one schema for every command writing one.

A manifest names the dataset's format, where it came from (raw ``inputs`` and the tokenizer,
or the ``adopted`` published files), the ``settings`` it was made with and every output file
with its size and sha256. ``verify`` checks a directory against it; it is moved in last, so a
directory whose manifest matches its files is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pileprep.core import atomic
from pileprep.core.version import __version__

FORMAT_VERSION = 1  # of the MMIDIDX dataset files


def entry(path: str | Path, sha256: str | None = None) -> dict:
    """An output's manifest entry; ``sha256`` when the writer hashed it as it wrote it."""
    path = Path(path)
    return {"bytes": path.stat().st_size, "sha256": sha256 or atomic.sha256_file(path)}


def entries(folder: str | Path, hashes: dict[str, str]) -> dict[str, dict]:
    """Entries of the files named in ``hashes`` (``{name: sha256}``), in ``folder``, by name."""
    return {name: entry(Path(folder) / name, sha) for name, sha in sorted(hashes.items())}


@dataclass
class Manifest:
    dtype: str
    settings: dict
    outputs: dict[str, dict]
    inputs: list[dict]
    tokenizer: dict | None = None  # built from raw text: vocab_size, eod_id, sha256
    adopted: dict | None = None  # adopted: the published files and how they are placed

    @classmethod
    def from_json(cls, record: dict) -> "Manifest":
        """The manifest a directory holds, to change (its version is written anew)."""
        return cls(record["format"]["dtype"], record["settings"], dict(record["outputs"]),
                   record["inputs"], record.get("tokenizer"), record.get("adopted"))

    def to_json(self) -> dict:
        record = {"pileprep_version": __version__,
                  "format": {"dataset": "MMIDIDX", "version": FORMAT_VERSION, "dtype": self.dtype}}
        if self.adopted is not None:
            record["adopted"] = self.adopted
        record["inputs"], record["settings"] = self.inputs, self.settings
        if self.tokenizer is not None:
            record["tokenizer"] = self.tokenizer
        record["outputs"] = self.outputs
        return record
