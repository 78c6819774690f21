"""Stage 3, tokenize: turn a partition's documents into token ids plus the end-of-document id.

Each document's ids are exactly ``Tokenizer.encode(text).ids`` of the ``tokenizers`` library
followed by the EOD id (``<|endoftext|>``, 0 for GPT-NeoX-20B), which is what GPT-NeoX's
``preprocess_data.py --append-eod`` writes. A partition becomes two part files: the raw token
array (``.bin``, already in the dataset dtype, so packing is a plain byte copy) and its
provenance rows (``.prov.parquet``).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import atomic, provenance
from .config import ENGINES, ConfigError, TokenizeConfig
from .indexed import best_fitting_dtype
from .ingest import Partition

EOD_TOKEN = "<|endoftext|>"


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


@functools.lru_cache(maxsize=4)
def fast_encoder(spec: str):
    """The fast engine for this tokenizer (see :mod:`pileprep.fastbpe`), checked against the
    reference on a probe set when built; raises ValueError if it cannot be used."""
    from . import fastbpe

    ref = load_tokenizer(spec)
    enc = fastbpe.FastEncoder(json.loads(ref.to_str()), reference=ref)
    for text in fastbpe.PROBES:
        if enc.encode(text).tolist() != ref.encode(text).ids:
            raise ValueError(f"differs from the reference on the probe {text[:40]!r}")
    return enc


def resolve_engine(spec: str, engine: str) -> tuple[str, str]:
    """``(engine to use, why)`` for ``--tokenizer-engine``: auto takes the fast engine when the
    tokenizer file is one it reproduces, the reference otherwise."""
    if engine not in ENGINES:
        raise ConfigError(f"--tokenizer-engine must be one of {', '.join(ENGINES)}")
    if engine == "reference":
        return "reference", "asked for"
    try:
        fast_encoder(spec)
    except ValueError as exc:
        if engine == "fast":
            raise ConfigError(f"--tokenizer-engine fast cannot reproduce {spec}: {exc}") from None
        return "reference", f"the fast engine cannot reproduce this tokenizer: {exc}"
    return "fast", "compiled pre-tokenizer and word memo over the tokenizer file's own BPE"


@dataclass(frozen=True)
class TokenizerInfo:
    spec: str
    vocab_size: int
    eod_id: int
    dtype: str
    engine: str = "reference"  # resolved: "fast" or "reference"; never changes the ids

    @classmethod
    def of(cls, spec: str, engine: str = "reference") -> "TokenizerInfo":
        tok = load_tokenizer(spec)
        eod = tok.token_to_id(EOD_TOKEN)
        if eod is None:
            raise ConfigError(f"tokenizer {spec} has no {EOD_TOKEN} token to end documents with")
        # GPT-NeoX sizes the dtype by the vocabulary including added tokens.
        vocab = tok.get_vocab_size(with_added_tokens=True)
        return cls(spec, vocab, eod, np.dtype(best_fitting_dtype(vocab)).name, engine)


def encode_with_eod(info: TokenizerInfo, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All documents' ids, each followed by the EOD id, in the dataset dtype, and each
    document's size: ``Tokenizer.encode(text).ids`` (default arguments, as GPT-NeoX calls it)
    from the engine ``info`` names."""
    dtype = np.dtype(info.dtype)
    if info.engine == "fast":
        return fast_encoder(info.spec).encode_batch(texts, info.eod_id, dtype)
    tok = load_tokenizer(info.spec)
    encode = getattr(tok, "encode_batch_fast", None) or tok.encode_batch
    return with_eod([np.asarray(enc.ids, np.int64) for enc in encode(texts)], info.eod_id, dtype)


def with_eod(docs: list[np.ndarray], eod: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Flatten documents into one array with ``eod`` after each; return it and the sizes."""
    sizes = np.fromiter((len(ids) + 1 for ids in docs), dtype=np.int64, count=len(docs))
    flat = np.empty(int(sizes.sum()), dtype)
    ends = np.cumsum(sizes)
    for ids, end in zip(docs, ends):
        flat[end - len(ids) - 1:end - 1] = ids
    flat[ends - 1] = eod
    return flat, sizes


@dataclass
class TokenPart:
    """What one tokenized partition produced; ``bin`` and ``prov`` are part file paths."""

    bin: str
    prov: str
    docs: int
    tokens: int
    text_bytes: int  # UTF-8 bytes of the documents' text
    shard_sha256: str = ""  # ties the part to the exact input it was made from (resume check)
    subsets: dict[str, list[int]] = field(default_factory=dict)  # name -> [docs, tokens, bytes]


def _batches(pf: pq.ParquetFile, cfg: TokenizeConfig):
    """Record batches of at most ``batch_docs`` documents and about ``batch_bytes`` of text.

    Capping bytes as well as documents keeps a worker's memory flat when long documents
    (books, code dumps) cluster together.
    """
    for batch in pf.iter_batches(batch_size=cfg.batch_docs):
        lengths = pc.binary_length(batch.column("text")).to_numpy(zero_copy_only=False)
        ends = np.cumsum(lengths)
        start = 0
        while start < batch.num_rows:
            base = ends[start - 1] if start else 0
            stop = int(np.searchsorted(ends, base + cfg.batch_bytes, side="right"))
            stop = max(stop, start + 1)  # a single huge document still forms a batch
            yield batch.slice(start, stop - start)
            start = stop


def tokenize_partition(part: Partition, out_dir: str, cfg: TokenizeConfig,
                       info: TokenizerInfo, shard_sha256: str = "") -> TokenPart:
    out = Path(out_dir)
    bin_path, prov_path = out / f"{part.stem}.bin", out / f"{part.stem}.prov.parquet"
    lines, subsets, sizes, nbytes = [], [], [], []
    pf = pq.ParquetFile(part.path)
    with atomic.atomic_path(bin_path) as tmp, open(tmp, "wb") as sink:
        for batch in _batches(pf, cfg):
            flat, doc_sizes = encode_with_eod(info, batch.column("text").to_pylist())
            flat.tofile(sink)
            sizes.append(doc_sizes)
            lines.append(batch.column("line").to_numpy())
            subsets.extend(batch.column("pile_set_name").to_pylist())
            nbytes.append(pc.binary_length(batch.column("text")).to_numpy(zero_copy_only=False))
    size_arr = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
    table = provenance.part_table(part.source, np.concatenate(lines) if lines else size_arr,
                                  subsets, size_arr, np.concatenate(nbytes) if nbytes else size_arr)
    with atomic.atomic_path(prov_path) as tmp:
        pq.write_table(table, tmp)
    return TokenPart(str(bin_path), str(prov_path), len(size_arr), int(size_arr.sum()),
                     int(table.column("bytes").to_numpy().sum()), shard_sha256, subset_totals(table))


def subset_totals(table) -> dict[str, list[int]]:
    """Documents, tokens and text bytes per ``pile_set_name`` in a provenance table."""
    grouped = table.group_by("pile_set_name").aggregate(
        [("tokens", "count"), ("tokens", "sum"), ("bytes", "sum")])
    names = grouped.column("pile_set_name").cast("string").to_pylist()
    rows = zip(grouped.column("tokens_count").to_pylist(), grouped.column("tokens_sum").to_pylist(),
               grouped.column("bytes_sum").to_pylist())
    return {name: [int(a), int(b), int(c)] for name, (a, b, c) in zip(names, rows)}
