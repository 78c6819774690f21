"""The reference engine: the ``tokenizers`` library itself (its Rust batch encoder)."""

from __future__ import annotations

import numpy as np

from pileprep.tokenizer.base import flatten, load_tokenizer, register


class ReferenceEngine:
    name = "reference"
    preference = 0
    description = "the tokenizers library"

    def check(self, spec: str) -> None:
        load_tokenizer(spec)

    def encode(self, spec: str, texts: list[str], eod: int, dtype):
        tok = load_tokenizer(spec)
        batch = getattr(tok, "encode_batch_fast", None) or tok.encode_batch
        return flatten([np.asarray(enc.ids, np.int64) for enc in batch(texts)], eod, dtype)


register(ReferenceEngine())
