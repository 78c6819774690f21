"""The fast engine: a compiled pre-tokenizer and word memo over the tokenizer file's own BPE
(:mod:`pileprep.tokenizer.fastbpe`), checked against the reference on probes when built."""

from __future__ import annotations

import functools
import json

from pileprep.tokenizer.base import EngineUnavailable, load_tokenizer, register


@functools.lru_cache(maxsize=4)
def fast_encoder(spec: str):
    """The fast encoder for this tokenizer; raises EngineUnavailable if it cannot be used."""
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


class FastEngine:
    name = "fast"
    preference = 10
    description = "compiled pre-tokenizer and word memo over the tokenizer file's own BPE"

    def check(self, spec: str) -> None:
        fast_encoder(spec)

    def encode(self, spec: str, texts: list[str], eod: int, dtype):
        return fast_encoder(spec).encode_batch(texts, eod, dtype)


register(FastEngine())
