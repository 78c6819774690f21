"""The fast engine: a compiled pre-tokenizer and word memo over the tokenizer file's own BPE
(:mod:`pileprep.tokenizer.fastbpe`), checked against the reference on probes when built."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import unicodedata
import zipfile
from importlib.metadata import version
from pathlib import Path

import numpy as np

from pileprep.core import atomic
from pileprep.core.tables import cache_dir
from pileprep.tokenizer.base import EngineUnavailable, file_identity, load_tokenizer, register


def fast_encoder(spec: str):
    """The fast encoder for this tokenizer; raises EngineUnavailable if it cannot be used.
    Built once per process and file: a file rewritten under the same name gets a new one (a
    long-lived process, or workers forked from a server that built it, see build.prefork)."""
    return _fast_encoder(spec, file_identity(spec))


@functools.lru_cache(maxsize=4)
def _fast_encoder(spec: str, identity):
    from pileprep.tokenizer import fastbpe

    ref = load_tokenizer(spec)
    digest = _digest(spec)
    enc = _cached_encoder(digest, ref)
    if enc is None:
        try:
            tables = fastbpe.FastEncoder.tables(json.loads(ref.to_str()))
        except ValueError as exc:
            raise EngineUnavailable(str(exc)) from None
        enc = fastbpe.FastEncoder.from_tables(tables, ref)
        _save_tables(digest, tables)
    # Every encoder, cached tables or not, is checked against the reference before use.
    for text in fastbpe.PROBES:
        if enc.encode(text).tolist() != ref.encode(text).ids:
            raise EngineUnavailable(f"differs from the reference on the probe {text[:40]!r}")
    return enc


# What the fast engine's ids depend on besides the tokenizer file: the tokenizer package's code,
# the derived tables' cache, and the libraries and Unicode data it compiles with or compares to.
_DEPENDS_ON = ("tokenizers", "numba", "numpy")


def _digest(spec: str) -> str | None:
    """What the engine derives from this tokenizer file depends on: the file, the tokenizer
    package's code and the versions above. None for a hub id."""
    if not os.path.exists(spec):
        return None
    versions = [*map(version, _DEPENDS_ON), sys.version, unicodedata.unidata_version]
    digest = hashlib.sha256(" ".join(versions).encode())
    here = Path(__file__).parent
    for source in [*sorted(here.glob("*.py")), here.parent / "core" / "tables.py"]:
        digest.update(source.read_bytes())
    digest.update(Path(spec).read_bytes())
    return digest.hexdigest()[:32]


def _verdict_path(spec: str) -> Path | None:
    """Where a passed check of this tokenizer file by this engine's code is remembered: a build's
    driver then need not build the encoder (a second each build) only to run the probes, which
    every worker runs again anyway when it builds its own. None for a hub id."""
    digest = _digest(spec)
    return None if digest is None else cache_dir() / "engine-checks" / f"fast-{digest}.ok"


def _tables_path(digest: str) -> Path:
    return cache_dir() / "engine-tables" / f"fast-{digest}.npz"


def _cached_encoder(digest: str | None, ref):
    """The encoder from tables an earlier build derived from this file with this code, or None
    (none yet, a hub id, or a damaged file: derived again)."""
    if digest is None:
        return None
    from pileprep.tokenizer import fastbpe

    try:
        with np.load(_tables_path(digest), allow_pickle=False) as tables:
            return fastbpe.FastEncoder.from_tables({k: tables[k] for k in tables.files}, ref)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _save_tables(digest: str | None, tables: dict) -> None:
    if digest is None:
        return
    path = _tables_path(digest)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **tables)
    except OSError:
        pass  # an unwritable cache only costs deriving them again next time


class FastEngine:
    name = "fast"
    preference = 10
    description = "compiled pre-tokenizer and word memo over the tokenizer file's own BPE"

    def check(self, spec: str) -> None:
        verdict = _verdict_path(spec)
        if verdict is not None and verdict.exists():
            return
        fast_encoder(spec)
        if verdict is not None:
            try:
                verdict.parent.mkdir(parents=True, exist_ok=True)
                atomic.write_json(verdict, {"tokenizer": spec})
            except OSError:
                pass  # an unwritable cache only costs the check again next time

    def encode(self, spec: str, texts: list[str], eod: int, dtype):
        return fast_encoder(spec).encode_batch(texts, eod, dtype)


register(FastEngine())
