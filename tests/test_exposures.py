"""Per-document exposure (``pileprep.training.exposures``) equals a count done sample by sample.

The module is built for scale (bucket files, vectorized interval unions); the reference here is
the opposite: every trained sample's source records from ``order.sample_sources(n)``, one at a
time, with Python sets for distinct samples and covered token positions. The build is tiny and
trained for several epochs, so documents are seen zero, one and several times, and partly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import helpers
from pileprep.core.errors import ConfigError
from pileprep.formats import provenance
from pileprep.outputs import exposures
from pileprep.training import exposures as exposure_rows
from pileprep.training.order import TrainingOrder

SCHEDULE = {"seq_length": 32, "batch_size": 4, "train_iters": 400, "seed": 3}


@pytest.fixture(scope="module")
def tiny_build(tokenizer_spec, tmp_path_factory) -> Path:
    """~40 documents, ~25k tokens, trained for about 3 epochs (checked by the tests)."""
    return helpers.tiny_build(tmp_path_factory.mktemp("exposures"), tokenizer_spec, SCHEDULE)


@pytest.fixture(scope="module")
def order(tiny_build) -> TrainingOrder:
    order = TrainingOrder(tiny_build)
    assert order.schedule.epochs >= 2, "the test build must be trained for several epochs"
    return order


def brute_force(order: TrainingOrder, steps: int) -> dict[str, list]:
    """Every column, by looping over the samples of steps 0 .. steps-1 one by one."""
    n_docs, B = len(order.data), order.cfg.batch_size
    samples = [set() for _ in range(n_docs)]
    covered = [set() for _ in range(n_docs)]
    tokens = [0] * n_docs
    for n in range(steps * B):
        for rec in order.sample_sources(n):
            d = rec["doc"]
            samples[d].add(n)
            covered[d].update(range(rec["doc_start"], rec["doc_end"]))
            tokens[d] += rec["doc_end"] - rec["doc_start"]
    sizes = order.data.sizes.tolist()
    return {
        "doc": list(range(n_docs)),
        "samples": [len(s) for s in samples],
        "tokens_seen": tokens,
        "fraction_seen": [len(c) / z for c, z in zip(covered, sizes)],
        "first_step": [min(s) // B if s else -1 for s in samples],
        "last_step": [max(s) // B if s else -1 for s in samples],
    }


def provenance_columns(out_dir: Path) -> dict[str, list]:
    table = provenance.read(out_dir, columns=["source", "line", "pile_set_name"])
    return {c: table.column(c).to_pylist() for c in table.column_names}


@pytest.mark.parametrize("steps", [None, 173, 1])
def test_every_column_equals_the_sample_by_sample_count(order, tiny_build, tmp_path, steps):
    """The full schedule, a step in the middle of an epoch, and the first step alone."""
    K = order.cfg.train_iters if steps is None else steps
    out = tmp_path / "exposures.parquet"
    summary = exposures.compute(order, steps, out)
    table = pq.read_table(out)
    assert table.schema == exposures.SCHEMA
    got = {c: table.column(c).to_pylist() for c in table.column_names}
    want = brute_force(order, K)
    for column in ("doc", "samples", "tokens_seen", "first_step", "last_step"):
        assert got[column] == want[column], column
    assert np.allclose(got["fraction_seen"], want["fraction_seen"], rtol=0, atol=1e-12)
    for column, values in provenance_columns(tiny_build).items():
        assert got[column] == values, column
    assert summary.output == out and summary.steps == K and summary.samples == K * 4
    # The brute force must have seen documents unseen, seen once and (for the full schedule)
    # seen several times and partly, or this test would not test much.
    if steps == 1:
        assert 0 in want["samples"] and -1 in want["first_step"]
    if steps is None:
        assert max(want["samples"]) >= 3
        assert any(0 < f < 1 for f in want["fraction_seen"])


def test_summary_adds_up(order, tiny_build, tmp_path):
    """Totals: every trained token is counted once in tokens_seen (K*B samples of L+1 tokens),
    and the per-subset rows add up to the table."""
    out = tmp_path / "x.parquet"
    summary = exposures.compute(order, 200, out)
    table = pq.read_table(out).to_pandas()
    sizes = order.data.sizes.astype(np.int64)
    total = summary.total
    assert total.tokens_seen == 200 * 4 * (32 + 1) == table.tokens_seen.sum()
    assert total.documents == len(order.data) == len(table)
    assert total.tokens == sizes.sum()
    assert total.seen == (table.samples >= 1).sum() and total.seen_twice == (table.samples >= 2).sum()
    assert total.tokens_covered == round((table.fraction_seen * sizes).sum())
    assert summary.max_samples == table.samples.max()
    by_subset = table.groupby("pile_set_name")
    assert {s.name: s.documents for s in summary.subsets} == by_subset.size().to_dict()
    assert {s.name: s.tokens_seen for s in summary.subsets} == by_subset.tokens_seen.sum().to_dict()
    assert {s.name: s.seen for s in summary.subsets} == (
        (table.samples >= 1).groupby(table.pile_set_name).sum().to_dict())
    assert [s.tokens for s in summary.subsets] == sorted((s.tokens for s in summary.subsets), reverse=True)
    text = "\n".join(summary.lines())
    assert "steps 0..199" in text and summary.subsets[0].name in text


def epochs_of_samples(order: TrainingOrder, samples: np.ndarray) -> np.ndarray:
    """The epoch each training sample starts in: its first doc_idx entry over the documents."""
    k = np.asarray(order.schedule.shuffle_idx)[samples]
    return np.asarray(order.schedule.sample_idx)[k, 0] // len(order.data)


def test_a_document_trained_in_two_epochs_counts_twice(order, tmp_path):
    """Any document with pieces in samples of two different epochs has samples >= 2 (and the
    schedule has such documents)."""
    p = order.pieces(np.arange(order.num_trained_samples))
    epoch = epochs_of_samples(order, p.sample)
    two_epochs = sorted({d for d in np.unique(p.doc).tolist()
                         if len(np.unique(epoch[p.doc == d])) >= 2})
    assert two_epochs, "the test schedule should train some document in two epochs"
    out = tmp_path / "x.parquet"
    summary = exposures.compute(order, output=out)
    samples = pq.read_table(out).column("samples").to_numpy()
    assert (samples[two_epochs] >= 2).all()
    assert summary.total.seen_twice >= len(two_epochs)


@pytest.mark.parametrize("docs_per_bucket,chunk_samples", [(1, 5), (7, 64), (7, 1000), (10**6, 3)])
def test_result_does_not_depend_on_bucket_or_chunk_size(order, tmp_path, docs_per_bucket,
                                                         chunk_samples):
    """Buckets and chunks bound memory; the file (bytes included) must come out the same."""
    ref, other = tmp_path / "ref.parquet", tmp_path / "other.parquet"
    want = exposures.compute(order, 251, ref)
    got = exposures.compute(order, 251, other, docs_per_bucket=docs_per_bucket,
                            chunk_samples=chunk_samples)
    assert pq.read_table(other).equals(pq.read_table(ref))
    assert other.read_bytes() == ref.read_bytes()
    assert got.total == want.total and got.subsets == want.subsets


def test_row_groups_and_no_output(order, tmp_path, monkeypatch):
    """Small row groups hold the same rows; without an output nothing is written, and the
    scratch directory is removed either way."""
    ref = tmp_path / "ref.parquet"
    want = exposures.compute(order, 77, ref)
    monkeypatch.setattr(exposures, "ROW_GROUP", 6)
    small = tmp_path / "small.parquet"
    exposures.compute(order, 77, small, docs_per_bucket=4)
    meta = pq.ParquetFile(small).metadata
    assert meta.num_row_groups == -(-len(order.data) // 6)
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups - 1)] == \
        [6] * (meta.num_row_groups - 1)
    assert pq.read_table(small).equals(pq.read_table(ref))
    work = tmp_path / "work"
    summary = exposures.compute(order, 77, work_dir=work, docs_per_bucket=3)
    assert summary.output is None and summary.total == want.total
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.parquet", "small.parquet", "work"]


def test_failure_leaves_no_output_and_no_scratch(order, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(exposure_rows, "doc_stats", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        exposures.compute(order, 10, tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [0, -1, 401, 2.5, True, "3"])
def test_until_step_out_of_range_is_a_config_error(order, tmp_path, bad):
    with pytest.raises(ConfigError):
        exposures.compute(order, bad, tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []


def test_bad_bucket_and_chunk_sizes_are_config_errors(order):
    with pytest.raises(ConfigError):
        exposures.compute(order, docs_per_bucket=0)
    with pytest.raises(ConfigError):
        exposures.compute(order, chunk_samples=0)


def test_unknown_provenance_gives_null_columns(order, tiny_build, tmp_path):
    """An adopted dataset's provenance has null source, line and subset: they stay null, the
    counts do not change, and the summary puts every document under the unknown subset ""."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_build, copy)
    prov = pq.read_table(copy / provenance.FILE_NAME)
    n = prov.num_rows
    for name, typ in (("source", pa.string()), ("line", pa.int64()), ("pile_set_name", pa.string())):
        prov = prov.set_column(prov.schema.get_field_index(name), name, pa.nulls(n, typ))
    pq.write_table(prov, copy / provenance.FILE_NAME)
    ref = pq.read_table(exposures_file(order, tmp_path / "ref.parquet"))
    out = tmp_path / "x.parquet"
    summary = exposures.compute(TrainingOrder(copy), output=out)
    got = pq.read_table(out)
    for c in ("source", "line", "pile_set_name"):
        assert got.column(c).null_count == n
    counts = ["doc", "samples", "tokens_seen", "fraction_seen", "first_step", "last_step"]
    assert got.select(counts).equals(ref.select(counts))
    assert [s.name for s in summary.subsets] == [""]
    assert summary.subsets[0].documents == n


def exposures_file(order: TrainingOrder, path: Path) -> Path:
    exposures.compute(order, output=path)
    return path


@pytest.mark.parametrize("seed", range(6))
def test_doc_stats_on_random_overlapping_pieces(seed):
    """The vectorized per-bucket statistics against sets, on pieces real schedules rarely make:
    heavy overlaps, nested intervals, and one sample holding a document several times."""
    rng = np.random.default_rng(seed)
    n_docs, B = int(rng.integers(1, 12)), int(rng.integers(1, 5))
    sizes = rng.integers(1, 40, n_docs).astype(np.int64)
    n = int(rng.integers(0, 80))
    doc = rng.integers(0, n_docs, n)
    offset = rng.integers(0, sizes[doc])
    tokens = rng.integers(1, sizes[doc] - offset + 1)
    rec = np.empty(n, exposure_rows.PIECE)
    rec["doc"], rec["offset"], rec["tokens"] = doc, offset, tokens
    rec["sample"] = rng.integers(0, 15, n)
    got = exposure_rows.doc_stats(rec, n_docs, sizes, B)
    for d in range(n_docs):
        mine = rec[rec["doc"] == d]
        samples = set(mine["sample"].tolist())
        covered = {t for o, k in zip(mine["offset"].tolist(), mine["tokens"].tolist())
                   for t in range(o, o + k)}
        assert got.samples[d] == len(samples)
        assert got.tokens_seen[d] == mine["tokens"].sum()
        assert got.covered[d] == len(covered)
        assert got.first_step[d] == (min(samples) // B if samples else -1)
        assert got.last_step[d] == (max(samples) // B if samples else -1)


def test_exact_paths_for_numbers_too_big_for_the_fast_ones():
    """Sample numbers whose doc*M+sample key would overflow use a lexsort; sums past 2^53 (where
    float64 bincount rounds) use exact integer adds. Both must give the exact answer."""
    rng = np.random.default_rng(0)
    doc = rng.integers(0, 5, 50)
    sample = (1 << 61) + rng.integers(0, 10, 50)
    d, s = exposure_rows.sorted_pairs(doc, sample)
    assert list(zip(d.tolist(), s.tolist())) == sorted(zip(doc.tolist(), sample.tolist()))
    values = np.full(50, (1 << 53) + 1, np.int64)
    want = [sum(int(v) for v, dd in zip(values, doc) if dd == k) for k in range(6)]
    assert exposure_rows.sum_by(doc, values, 6).tolist() == want
