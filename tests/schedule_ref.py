"""A straightforward loop implementation of GPT-NeoX's training-order index, for the tests.

Written from the description in issue #3 / docs/schedule.md, one sample at a time, with no
import from pileprep.
"""

from __future__ import annotations

import math

import numpy as np


def reference_schedule(sizes, seq_length, batch_size, train_iters, seed):
    num_samples = math.ceil(train_iters * batch_size * 1.005)
    tokens_per_epoch = int(sum(int(s) for s in sizes))
    epochs = 1
    while (epochs * tokens_per_epoch - 1) // seq_length < num_samples:
        epochs += 1
    rng = np.random.RandomState(seed)
    doc_idx = np.array([d for _ in range(epochs) for d in range(len(sizes))], dtype=np.int32)
    rng.shuffle(doc_idx)
    n = (epochs * tokens_per_epoch - 1) // seq_length
    sample_idx = [(0, 0)]
    i, offset = 0, 0
    for _ in range(n):
        remaining = seq_length + 1
        while remaining != 0:
            length = int(sizes[doc_idx[i]]) - offset
            remaining -= length
            if remaining <= 0:
                offset += remaining + length - 1
                remaining = 0
            else:
                i += 1
                offset = 0
        sample_idx.append((i, offset))
    dtype = np.uint32 if n < np.iinfo(np.uint32).max - 1 else np.int64
    shuffle_idx = np.arange(n, dtype=dtype)
    rng.shuffle(shuffle_idx)
    return num_samples, epochs, doc_idx, np.array(sample_idx), shuffle_idx


def reference_sample(docs, doc_idx, sample_idx, shuffle_idx, n, seq_length):
    """Tokens of training sample n from a list of documents (lists of ints), walking the stream."""
    k = int(shuffle_idx[n])
    (i0, o0), (i1, o1) = sample_idx[k], sample_idx[k + 1]
    if i0 == i1:
        out = docs[doc_idx[i0]][o0:o1 + 1]
    else:
        out = list(docs[doc_idx[i0]][o0:])
        for i in range(i0 + 1, i1):
            out += docs[doc_idx[i]]
        out += docs[doc_idx[i1]][:o1 + 1]
    assert len(out) == seq_length + 1
    return out
