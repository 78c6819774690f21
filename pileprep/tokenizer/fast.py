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
    try:
        enc = fastbpe.FastEncoder(json.loads(ref.to_str()), reference=ref)
    except ValueError as exc:
        raise EngineUnavailable(str(exc)) from None
    for text in fastbpe.PROBES:
        if enc.encode(text).tolist() != ref.encode(text).ids:
            raise EngineUnavailable(f"differs from the reference on the probe {text[:40]!r}")
    return enc


# What the fast engine's ids depend on besides the tokenizer file: the tokenizer package's code,
# the derived tables' cache, and the libraries and Unicode data it compiles with or compares to.
_DEPENDS_ON = ("tokenizers", "numba", "numpy")


def _verdict_path(spec: str) -> Path | None:
    """Where a passed check of this tokenizer file by this engine's code is remembered: a build's
    driver then need not build the encoder (a second each build) only to run the probes, which
    every worker runs again anyway when it builds its own. None for a hub id."""
    if not os.path.exists(spec):
        return None
    versions = [*map(version, _DEPENDS_ON), sys.version, unicodedata.unidata_version]
    digest = hashlib.sha256(" ".join(versions).encode())
    here = Path(__file__).parent
    for source in [*sorted(here.glob("*.py")), here.parent / "core" / "tables.py"]:
        digest.update(source.read_bytes())
    digest.update(Path(spec).read_bytes())
    return cache_dir() / "engine-checks" / f"fast-{digest.hexdigest()[:32]}.ok"


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
