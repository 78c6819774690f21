"""The tokenize stage: a partition's documents -> token ids (+ EOD) and provenance rows.

Each document's ids are exactly ``Tokenizer.encode(text).ids`` of the ``tokenizers`` library,
followed by the EOD id (``<|endoftext|>``, 0 for GPT-NeoX-20B) unless ``append_eod`` is off:
what GPT-NeoX's ``preprocess_data.py [--append-eod]`` writes. A partition becomes two part
files: the raw token array (``.bin``, already in the dataset dtype, so packing is a plain byte
copy) and its provenance rows (``.prov.parquet``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pileprep.core import atomic
from pileprep.core.config import TokenizeConfig
from pileprep.formats import provenance
from pileprep.formats.parts import Partition, TokenPart
from pileprep.tokenizer import TokenizerInfo, encode


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
            flat, doc_sizes = encode(info, batch.column("text").to_pylist(), cfg.append_eod)
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
                     int(table.column("bytes").to_numpy().sum()), shard_sha256, provenance.subset_totals(table))
