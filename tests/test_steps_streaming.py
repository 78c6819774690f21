"""Step-range summaries (``seen``, the subset mix) stream their pieces a chunk of samples at a
time: with chunks far smaller than the range they equal the summaries of all its pieces at once."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

import pileprep
from pileprep.outputs.export import write_seen
from pileprep.training import pieces as pieces_of
from pileprep.training import steps

from helpers import API_SCHEDULE

B = API_SCHEDULE["batch_size"]


@pytest.mark.parametrize("spill", [None, 50], ids=["in-memory", "spilled"])
def test_seen_and_subset_mix_over_tiny_chunks_equal_the_whole_range(scheduled_build, monkeypatch,
                                                                    tmp_path, spill):
    order = pileprep.open(scheduled_build).schedule()
    first, end = 3, 41
    whole = steps.pieces(order, first, end)
    table, names = steps.subset_tokens(order, whole)
    doc, tokens, first_sample = steps.documents(whole)

    monkeypatch.setattr(steps, "RANGE_SAMPLES", 7)  # not a divisor of the batch size
    if spill is not None:
        monkeypatch.setattr(steps, "SPILL_DOCS", spill)  # documents of the range go to disk
    assert len(list(steps.chunks(order, first, end))) == -(-(end - first) * B // 7)
    s = steps.seen(order, first, end)
    assert isinstance(s.docs, np.memmap) == (spill is not None)
    assert s.docs.tolist() == doc.tolist()
    assert s.tokens_seen.tolist() == tokens.tolist()
    assert s.first_step.tolist() == (first_sample // B).tolist()
    assert s.top(5).tolist() == np.argsort(-tokens, kind="stable")[:5].tolist()
    write_seen(order, s, tmp_path / "seen.parquet")
    written = pq.read_table(tmp_path / "seen.parquet")
    assert written.column("doc").to_pylist() == doc.tolist()
    assert written.column("tokens_seen").to_pylist() == tokens.tolist()
    assert dict(s.subsets) == {n: int(v) for n, v in zip(names, table[0]) if v}
    assert s.tokens == (end - first) * B * (API_SCHEDULE["seq_length"] + 1)

    mix, mix_names, edges = steps.subset_mix(order, first, end, 5)
    bins = np.searchsorted(np.asarray(edges[1:-1]), whole.sample // B, side="right")
    want, want_names = steps.subset_tokens(order, whole, bins)
    assert mix_names == want_names
    assert mix.tolist() == want.tolist()


@pytest.mark.parametrize("spill", [None, 1], ids=["in-memory", "spilled"])
def test_document_totals_merge_runs_of_the_same_documents(monkeypatch, spill):
    """A document in several chunks: tokens add up, the first step is the smallest; the same
    when every merged run goes to disk (and the result is merged back from the files)."""
    if spill is not None:
        monkeypatch.setattr(steps, "SPILL_DOCS", spill)
    totals = steps.DocumentTotals(batch_size=2)
    chunks = [([9, 9], [4, 2], [5, 1]), ([3], [4], [7]), ([12, 1, 0], [8, 2, 11], [2, 3, 1]),
              ([7], [2], [4])]
    for sample, doc, tok in chunks:
        n = len(doc)
        totals.add(pieces_of.Pieces(np.array(sample), np.array(doc), np.zeros(n, np.int64),
                                    np.array(tok), np.zeros(n, np.int64)))
    assert bool(totals.files) == (spill is not None)
    doc, tokens, first = totals.result()
    assert doc.tolist() == [2, 4, 8, 11]
    assert tokens.tolist() == [8, 12, 2, 1]
    assert first.tolist() == [0, 1, 6, 0]  # first samples 1, 3, 12, 0 at batch size 2


def test_top_documents_a_chunk_at_a_time(monkeypatch):
    """The k most seen, ties to the lower position, as a stable sort of the whole array gives."""
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 6, 200)
    s = steps.Seen(0, 1, 1, [], np.arange(200), tokens, np.zeros(200, np.int64))
    want = np.argsort(-tokens, kind="stable")
    for chunk in (7, 64, 1000):
        monkeypatch.setattr(steps, "SPILL_DOCS", chunk)
        for k in (0, 1, 5, 30, 250):
            assert s.top(k).tolist() == want[:k].tolist()


def test_dense_and_scattered_file_reads_agree(tmp_path, monkeypatch):
    """A FileArray request of many rows is read in blocks (one pass over the file), of few
    rows a read per row: the same answer either way, for 1-d and 2-d arrays and repeated rows."""
    from pileprep.formats import indexed

    a = np.arange(3000, dtype=np.int64).reshape(1500, 2) * 3
    np.save(tmp_path / "a.npy", a)
    arr = indexed.FileArray.of(np.load(tmp_path / "a.npy", mmap_mode="r"))
    idx = np.random.default_rng(1).integers(0, 1500, 400)
    idx[:3] = [1499, 0, 1499]
    monkeypatch.setattr(indexed, "_DENSE_BYTES", 1)  # no request counts as dense
    scattered = arr[idx]
    monkeypatch.setattr(indexed, "_DENSE_BYTES", 1 << 30)  # every request counts as dense
    monkeypatch.setattr(indexed, "_BLOCK_BYTES", 16 * 7)  # blocks of 7 rows
    assert (arr[idx] == a[idx]).all() and (scattered == a[idx]).all()
    flat = indexed.FileArray(tmp_path / "a.npy", np.int64, (3000,), arr.offset)
    assert (flat[idx.reshape(20, 20)] == a.reshape(-1)[idx.reshape(20, 20)]).all()
