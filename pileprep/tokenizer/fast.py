"""The fast engine: a compiled pre-tokenizer and word memo over the tokenizer file's own BPE
(:mod:`pileprep.tokenizer.fastbpe`), checked against the reference on probes when built."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import unicodedata
from importlib.metadata import version
from pathlib import Path

import numpy as np

from pileprep.core import atomic
from pileprep.core.tables import cache_dir
from pileprep.tokenizer.base import EngineUnavailable, load_tokenizer, register


@functools.lru_cache(maxsize=4)
def fast_encoder(spec: str):
    """The fast encoder for this tokenizer; raises EngineUnavailable if it cannot be used."""
    from pileprep.tokenizer import fastbpe

    # One reading of the file: the tables cached under its digest are derived from, and
    # checked against, exactly these bytes.
    data = Path(spec).read_bytes() if os.path.isfile(spec) else None
    if data is None:
        ref, digest = load_tokenizer(spec), None
    else:
        ref, digest = _tokenizer_from(spec, data), _digest(data)
    enc = _cached_encoder(digest, ref)
    if enc is not None and _failed(enc, ref) is not None:
        _tables_path(digest).unlink(missing_ok=True)  # derived by other code: derive again
        enc = None
    if enc is None:
        try:
            tables = fastbpe.FastEncoder.tables(json.loads(ref.to_str()))
        except ValueError as exc:
            raise EngineUnavailable(str(exc)) from None
        enc = fastbpe.FastEncoder.from_tables(tables, ref)
        failed = _failed(enc, ref)
        if failed is not None:
            raise EngineUnavailable(f"differs from the reference on a probe ({failed!r})")
        _save_tables(digest, tables)
    return enc


def _tokenizer_from(spec: str, data: bytes):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(data.decode())
    except Exception as exc:  # the Rust side raises plain Exception on a bad file
        raise EngineUnavailable(f"cannot load tokenizer file {spec}: {exc}") from None


def _failed(enc, ref) -> str | None:
    """The first probe text the encoder gets wrong, or None."""
    from pileprep.tokenizer import fastbpe

    for text in fastbpe.PROBES:
        if enc.encode(text).tolist() != ref.encode(text).ids:
            return text[:40]
    return None


# What the fast engine's ids depend on besides the tokenizer file: the tokenizer package's code,
# the derived tables' cache, and the libraries and Unicode data it compiles with or compares to.
_DEPENDS_ON = ("tokenizers", "numba", "numpy")


def _digest(data: bytes) -> str:
    """What the engine derives from a tokenizer file depends on: its bytes, the tokenizer
    package's code and the versions above."""
    versions = [*map(version, _DEPENDS_ON), sys.version, unicodedata.unidata_version]
    digest = hashlib.sha256(" ".join(versions).encode())
    here = Path(__file__).parent
    for source in [*sorted(here.glob("*.py")), here.parent / "core" / "tables.py"]:
        digest.update(source.read_bytes())
    digest.update(data)
    return digest.hexdigest()[:32]


def _verdict_path(spec: str) -> Path | None:
    """Where a passed check of this tokenizer file by this engine's code is remembered: a build's
    driver then need not build the encoder (a second each build) only to run the probes, which
    every worker runs again anyway when it builds its own. None for a hub id."""
    if not os.path.isfile(spec):
        return None
    return cache_dir() / "engine-checks" / f"fast-{_digest(Path(spec).read_bytes())}.ok"


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
    except Exception:  # noqa: BLE001 - any damage: derived again (and probed either way)
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
