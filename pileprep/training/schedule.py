"""The training-order index: which tokens a GPT-NeoX trainer reads at every step.

For a dataset of document sizes and the settings (sequence length L, global batch size B,
train iterations T, seed S), GPT-NeoX's ``GPT2Dataset`` (packed, one train path of weight 1)
builds three arrays; this module builds the same ones, with numpy and without a per-sample
loop, and saves them under GPT-NeoX's own file names so GPT-NeoX loads them instead of
rebuilding:

- ``doc_idx``: every document index repeated for E epochs, shuffled by ``RandomState(S)``;
- ``sample_idx[k] = (i, o)``: sample k starts at document ``doc_idx[i]``, token offset ``o``;
  sample k is the L+1 tokens from there (sharing its last token with the next sample);
- ``shuffle_idx``: a permutation of the samples, drawn from the same RandomState after doc_idx.

Training sample n is sample ``shuffle_idx[n]``; the batch at step N is training samples
``N*B .. N*B+B-1``. See docs/schedule.md for the derivation. This module is the algorithm only;
:mod:`.schedule_files` saves and loads the arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pileprep.core.config import ScheduleConfig
from pileprep.core.errors import ConfigError

_CHUNK = 1 << 24  # doc_idx entries processed at once: bounds the temporary arrays


def num_epochs(tokens_per_epoch: int, seq_length: int, num_samples: int) -> int:
    """The smallest E with ``(E * tokens_per_epoch - 1) // seq_length >= num_samples``."""
    if tokens_per_epoch < 2:
        raise ConfigError("the dataset has fewer than 2 tokens; no sample can be formed")
    # Closed form for the lower bound, then step up (at most a couple of iterations).
    epochs = max(1, (num_samples * seq_length + 1) // tokens_per_epoch)
    while epochs > 1 and ((epochs - 1) * tokens_per_epoch - 1) // seq_length >= num_samples:
        epochs -= 1
    while (epochs * tokens_per_epoch - 1) // seq_length < num_samples:
        epochs += 1
    return epochs


def build_doc_idx(n_docs: int, epochs: int, rng: np.random.RandomState) -> np.ndarray:
    doc_idx = np.tile(np.arange(n_docs, dtype=np.int32), epochs)
    rng.shuffle(doc_idx)
    return doc_idx


def sample_idx_dtype(epochs: int, tokens_per_epoch: int, seq_length: int):
    # GPT-NeoX tests this bound with true division; mirror it to pick the same dtype.
    n = (epochs * tokens_per_epoch - 1) / seq_length
    return np.int32 if 2 * (n + 1) < np.iinfo(np.int32).max else np.int64


def build_sample_idx(sizes: np.ndarray, doc_idx: np.ndarray, seq_length: int, epochs: int,
                     tokens_per_epoch: int) -> np.ndarray:
    """Vectorized sample index: sample k starts at token position k*L of the doc_idx stream.

    The document holding position p is the first one whose cumulative end exceeds p, and the
    offset is p minus that document's start. This equals GPT-NeoX's loop, including samples that
    end exactly on a document boundary (the next sample then starts at that document's last
    token). Works in chunks of doc_idx so temporaries stay small at Pile scale.
    """
    n_samples = (epochs * tokens_per_epoch - 1) // seq_length
    out = np.empty((n_samples + 1, 2), dtype=sample_idx_dtype(epochs, tokens_per_epoch, seq_length))
    sizes64 = np.asarray(sizes)
    done, base = 0, 0  # samples written so far; token position where the chunk starts
    for lo in range(0, len(doc_idx), _CHUNK):
        ends = np.cumsum(sizes64[doc_idx[lo:lo + _CHUNK]], dtype=np.int64)
        ends += base
        chunk_end = int(ends[-1])
        # Samples whose start position falls in [base, chunk_end).
        last = min(n_samples, (chunk_end - 1) // seq_length)
        if last >= done:
            pos = np.arange(done, last + 1, dtype=np.int64) * seq_length
            j = np.searchsorted(ends, pos, side="right")
            starts = np.where(j > 0, ends[np.maximum(j - 1, 0)], base)
            out[done:last + 1, 0] = j + lo
            out[done:last + 1, 1] = pos - starts
            done = last + 1
        base = chunk_end
    if done != n_samples + 1:
        raise AssertionError(f"sample index incomplete: {done} of {n_samples + 1}")
    return out


def build_shuffle_idx(size: int, rng: np.random.RandomState) -> np.ndarray:
    dtype = np.uint32 if size < np.iinfo(np.uint32).max - 1 else np.int64
    idx = np.arange(size, dtype=dtype)
    rng.shuffle(idx)
    return idx


@dataclass
class Schedule:
    doc_idx: np.ndarray
    sample_idx: np.ndarray
    shuffle_idx: np.ndarray
    cfg: ScheduleConfig
    epochs: int
    tokens_per_epoch: int


def total_tokens(sizes, chunk: int = 1 << 24) -> int:
    """The sum of document sizes, in chunks (int32 sizes of 210 M documents overflow int32, and
    one int64 copy of them is 1.7 GB)."""
    return sum(int(np.asarray(sizes[lo:lo + chunk], np.int64).sum()) for lo in range(0, len(sizes), chunk))


def build(sizes: np.ndarray, cfg: ScheduleConfig) -> Schedule:
    """All three arrays for the given document sizes (tokens per document, EOD included)."""
    cfg.validate()
    tokens = total_tokens(sizes)
    epochs = num_epochs(tokens, cfg.seq_length, cfg.num_samples)
    rng = np.random.RandomState(seed=cfg.seed)
    doc_idx = build_doc_idx(len(sizes), epochs, rng)
    sample_idx = build_sample_idx(sizes, doc_idx, cfg.seq_length, epochs, tokens)
    shuffle_idx = build_shuffle_idx(sample_idx.shape[0] - 1, rng)
    return Schedule(doc_idx, sample_idx, shuffle_idx, cfg, epochs, tokens)
