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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_part_tables_built_from_buffers_equal_arrow_built_ones(seed):
    """A provenance part table is wrapped from numpy buffers and its per-subset totals counted
    with numpy (pyarrow's own ways import pandas); both equal what Arrow itself builds."""
    import pyarrow as pa

    from pileprep.formats import provenance
    from pileprep.formats.parts import numpy_of

    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 50))
    names = ["Pile-CC", "Github", "", "ArXiv", "Ubuntu IRC", "数据"]
    subsets = [names[i] for i in rng.integers(0, len(names), n)]
    lines, tokens, nbytes = rng.integers(0, 1 << 40, n), rng.integers(1, 1 << 20, n), rng.integers(1, 1 << 40, n)
    ours = provenance.part_table("07.jsonl.zst", lines, subsets, tokens, nbytes)
    arrow = pa.table({
        "source": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), ["07.jsonl.zst"]),
        "line": pa.array(lines, pa.int64()), "pile_set_name": pa.array(subsets, pa.string()).dictionary_encode(),
        "tokens": pa.array(tokens, pa.int32()), "bytes": pa.array(nbytes, pa.int64())},
        schema=provenance.PART_SCHEMA)
    assert ours.equals(arrow)
    expected = {}
    for name, t, b in zip(subsets, tokens.tolist(), nbytes.tolist()):
        acc = expected.setdefault(name, [0, 0, 0])
        acc[0], acc[1], acc[2] = acc[0] + 1, acc[1] + t, acc[2] + b
    halves = pa.concat_tables([ours.slice(0, n // 2), ours.slice(n // 2)])  # two chunks
    assert provenance.subset_totals(halves) == expected
    assert numpy_of(halves.column("line")).tolist() == lines.tolist()
