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
import pyarrow.parquet as pq

from pileprep.core import atomic
from pileprep.core.config import TokenizeConfig
from pileprep.formats import provenance
from pileprep.formats.parts import Partition, Records, TokenPart, numpy_of, partition_batches
from pileprep.tokenizer import TokenizerInfo, encode


def tokenize_partition(part: Partition, out_dir: str, cfg: TokenizeConfig,
                       info: TokenizerInfo, shard_sha256: str = "",
                       records: Records | None = None) -> TokenPart:
    """Tokenize one partition, read from its file or, inline, from ``records`` in memory."""
    out = Path(out_dir)
    bin_path, prov_path = out / f"{part.stem}.bin", out / f"{part.stem}.prov.parquet"
    lines, subsets, sizes, nbytes = [], [], [], []
    with atomic.atomic_path(bin_path) as tmp, open(tmp, "wb") as sink:
        for batch in partition_batches(part.path, records, cfg.batch_docs, cfg.batch_bytes):
            flat, doc_sizes = encode(info, batch.texts, cfg.append_eod)
            flat.tofile(sink)
            atomic.start_writeback(sink)
            sizes.append(doc_sizes)
            lines.append(batch.lines)
            subsets.extend(batch.subsets)
            nbytes.append(batch.nbytes)
    size_arr = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
    table = provenance.part_table(part.source, np.concatenate(lines) if lines else size_arr,
                                  subsets, size_arr, np.concatenate(nbytes) if nbytes else size_arr)
    with atomic.atomic_path(prov_path) as tmp:
        pq.write_table(table, tmp)
    return TokenPart(str(bin_path), str(prov_path), len(size_arr), int(size_arr.sum()),
                     int(numpy_of(table.column("bytes")).sum()), shard_sha256, provenance.subset_totals(table))
