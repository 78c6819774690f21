"""What every tokenizer engine shares: loading the tokenizer file, its facts, and the registry.

An engine turns a batch of texts into ``Tokenizer.encode(text).ids`` of the ``tokenizers``
library (default arguments, as GPT-NeoX calls it), optionally each followed by the
end-of-document id, in the dataset dtype. Engines differ in speed only, never in ids; each is a
module behind the small :class:`Engine` protocol that calls :func:`register`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pileprep.core.errors import ConfigError
from pileprep.formats.indexed import best_fitting_dtype

EOD_TOKEN = "<|endoftext|>"
AUTO = "auto"


class EngineUnavailable(Exception):
    """An engine cannot reproduce this tokenizer file; the message says why."""


class Engine(Protocol):
    name: str
    preference: int  # "auto" takes the available engine with the highest preference
    description: str

    def check(self, spec: str) -> None:
        """Raise :class:`EngineUnavailable` when this engine cannot reproduce ``spec``."""

    def encode(self, spec: str, texts: list[str], eod: int, dtype) -> tuple[np.ndarray, np.ndarray]:
        """All texts' ids in one array of ``dtype``, each followed by ``eod`` unless it is
        negative, and the number of ids of each text."""


ENGINES: dict[str, Engine] = {}


def register(engine: Engine) -> Engine:
    ENGINES[engine.name] = engine
    return engine


def engine_names() -> tuple[str, ...]:
    """``--tokenizer-engine`` choices: auto, then the engines by preference."""
    return (AUTO, *sorted(ENGINES, key=lambda n: -ENGINES[n].preference))


@functools.lru_cache(maxsize=4)
def load_tokenizer(spec: str):
    """Load a ``tokenizers.Tokenizer`` from a file path or a hub id (cached per process)."""
    from tokenizers import Tokenizer

    if os.path.exists(spec):
        try:
            return Tokenizer.from_file(spec)
        except Exception as exc:  # the Rust side raises plain Exception on a bad file
            raise ConfigError(f"cannot load tokenizer file {spec}: {exc}") from None
    try:
        return Tokenizer.from_pretrained(spec)
    except Exception as exc:
        raise ConfigError(
            f"cannot load tokenizer {spec!r}: not a file, and the hub could not provide it "
            f"({exc}). Pass --tokenizer PATH or set PILEPREP_TOKENIZER.") from None


def resolve_engine(spec: str, engine: str) -> tuple[str, str]:
    """``(engine to use, why)`` for ``--tokenizer-engine``: auto takes the preferred engine
    that reproduces the tokenizer file; a named engine that cannot is a setting error."""
    if engine != AUTO and engine not in ENGINES:
        raise ConfigError(f"tokenize.engine must be one of {', '.join(engine_names())}, "
                          f"not {engine!r}")
    if engine != AUTO:
        try:
            ENGINES[engine].check(spec)
        except EngineUnavailable as exc:
            raise ConfigError(f"tokenize.engine {engine} cannot reproduce {spec}: {exc}") from None
        return engine, "asked for"
    refused = []
    for name in engine_names()[1:]:
        try:
            ENGINES[name].check(spec)
        except EngineUnavailable as exc:
            refused.append(f"the {name} engine cannot reproduce this tokenizer: {exc}")
            continue
        return name, "; ".join(refused + [ENGINES[name].description])
    raise ConfigError(f"no tokenizer engine can encode {spec}: {'; '.join(refused)}")


@dataclass(frozen=True)
class TokenizerInfo:
    spec: str
    vocab_size: int
    eod_id: int
    dtype: str
    engine: str = "reference"  # resolved engine name; never changes the ids

    @classmethod
    def of(cls, spec: str, engine: str = "reference") -> "TokenizerInfo":
        tok = load_tokenizer(spec)
        eod = tok.token_to_id(EOD_TOKEN)
        if eod is None:
            raise ConfigError(f"tokenizer {spec} has no {EOD_TOKEN} token to end documents with")
        # GPT-NeoX sizes the dtype by the vocabulary including added tokens.
        vocab = tok.get_vocab_size(with_added_tokens=True)
        return cls(spec, vocab, eod, np.dtype(best_fitting_dtype(vocab)).name, engine)


def encode(info: TokenizerInfo, texts: list[str], append_eod: bool = True
           ) -> tuple[np.ndarray, np.ndarray]:
    """All documents' ids (each followed by the EOD id when ``append_eod``, as GPT-NeoX's
    ``preprocess_data.py --append-eod`` writes) in the dataset dtype, and each one's size."""
    eod = info.eod_id if append_eod else -1
    return ENGINES[info.engine].encode(info.spec, texts, eod, np.dtype(info.dtype))


def flatten(docs: list[np.ndarray], eod: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Documents into one array, ``eod`` after each unless it is negative; and the sizes."""
    extra = 1 if eod >= 0 else 0
    sizes = np.fromiter((len(ids) + extra for ids in docs), dtype=np.int64, count=len(docs))
    flat = np.empty(int(sizes.sum()), dtype)
    ends = np.cumsum(sizes)
    for ids, end in zip(docs, ends):
        flat[end - extra - len(ids):end - extra] = ids
    if extra:
        flat[ends - 1] = eod
    return flat, sizes
