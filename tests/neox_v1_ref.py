"""GPT-NeoX v1.0's rules for finding a training-order index, written down for the tests.

Independent of pileprep (stdlib and numpy only). GPT-NeoX v1.0 (the version Pythia trained with)
names the index of the i-th training data path ``<data_prefix>_train_<i>_indexmap_<N>ns_<L>sl_
<S>s_{doc,sample,shuffle}_idx.npy``, where N is the number of samples it asks the dataset for:
``ceil(train_iters * train_batch_size * weight * 1.005)``. When all three files exist
(``os.path.isfile``, so a link counts) it memory-maps them instead of building its own; the
training sample n is then ``sample_idx[shuffle_idx[n]]``.
"""

from __future__ import annotations

import math
import os

import numpy as np


def num_samples(train_iters: int, batch_size: int, weight: float = 1.0) -> int:
    return int(math.ceil(train_iters * batch_size * weight * 1.005))


def index_files(data_prefix: str, train_iters: int, batch_size: int, seq_length: int,
                seed: int, path_index: int = 0) -> dict[str, str]:
    stem = (f"{data_prefix}_train_{path_index}_indexmap_{num_samples(train_iters, batch_size)}ns_"
            f"{seq_length}sl_{seed}s")
    return {kind: f"{stem}_{kind}_idx.npy" for kind in ("doc", "sample", "shuffle")}


def load_if_present(data_prefix: str, train_iters: int, batch_size: int, seq_length: int,
                    seed: int):
    """``(doc_idx, sample_idx, shuffle_idx)`` as v1.0 would load them, or None when it would
    rebuild the index (some file missing)."""
    files = index_files(data_prefix, train_iters, batch_size, seq_length, seed)
    if not all(os.path.isfile(f) for f in files.values()):
        return None
    return tuple(np.load(files[k], allow_pickle=True, mmap_mode="r") for k in ("doc", "sample", "shuffle"))
