"""The .bin/.idx pileprep writes are byte-identical to GPT-NeoX's preprocessing of the same shards.

The expected bytes come from tests/megatron_ref.py, an independent implementation written from
the format description that processes one document at a time with the stdlib json module.
"""

from __future__ import annotations

import numpy as np
import pytest

import megatron_ref
from helpers import shard_files
from pileprep.formats import indexed


def test_bytes_identical_to_reference_preprocessing(clean_corpus, clean_build, tokenizer, tmp_path):
    ref = tmp_path / "ref_text_document"
    megatron_ref.reference_build(shard_files(clean_corpus), tokenizer, ref)
    ours = clean_build / "pile_text_document"
    assert (ours.with_suffix(".bin")).read_bytes() == ref.with_suffix(".bin").read_bytes()
    assert (ours.with_suffix(".idx")).read_bytes() == ref.with_suffix(".idx").read_bytes()


def test_independent_reader_agrees_with_ours(clean_build):
    prefix = clean_build / "pile_text_document"
    code, sizes, pointers, doc_idx = megatron_ref.read_index(f"{prefix}.idx")
    assert code == 8  # uint16: the 20B vocabulary (50277) is below 65500
    assert doc_idx == list(range(len(sizes) + 1))
    assert pointers[0] == 0 and all(b - a == 2 * n for a, b, n in zip(pointers, pointers[1:], sizes))
    assert pointers[-1] + 2 * sizes[-1] == (clean_build / "pile_text_document.bin").stat().st_size
    ds = indexed.IndexedDataset(prefix)
    docs = megatron_ref.read_documents(prefix)
    assert len(ds) == len(docs) > 100
    for i in range(0, len(docs), 7):
        assert ds[i].tolist() == docs[i]
    assert all(d[-1] == 0 for d in docs)  # every document ends with the EOD token


@pytest.mark.parametrize("vocab,dtype,code", [(50277, np.uint16, 8), (65499, np.uint16, 8),
                                              (65500, np.int32, 4), (None, np.int32, 4)])
def test_dtype_choice_follows_gpt_neox(vocab, dtype, code):
    assert indexed.best_fitting_dtype(vocab) is dtype
    assert indexed.dtype_code(dtype) == code


def test_streaming_index_writer_matches_reference_layout(tmp_path):
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 5000, size=2345).astype(np.int64)
    chunks = np.array_split(sizes, 7)
    with open(tmp_path / "x.idx", "wb") as f:
        indexed.write_index(f, np.int32, len(sizes), lambda: iter(chunks))
    code, got_sizes, pointers, doc_idx = megatron_ref.read_index(tmp_path / "x.idx")
    assert code == 4 and got_sizes == sizes.tolist()
    expected_ptr = np.concatenate([[0], np.cumsum(sizes)[:-1] * 4]).tolist()
    assert pointers == expected_ptr and doc_idx == list(range(len(sizes) + 1))


def test_reader_rejects_corrupt_index(clean_build, tmp_path):
    bad = tmp_path / "bad_text_document"
    data = (clean_build / "pile_text_document.idx").read_bytes()
    (tmp_path / "bad_text_document.bin").write_bytes(b"")
    bad.with_suffix(".idx").write_bytes(b"NOTMAGIC!" + data[9:])
    with pytest.raises(indexed.FormatError, match="bad magic"):
        indexed.IndexedDataset(bad)
    bad.with_suffix(".idx").write_bytes(data[:-8])
    with pytest.raises(indexed.FormatError, match="header .* implies"):
        indexed.IndexedDataset(bad)
