"""The training-order index equals GPT-NeoX's, checked against a loop written from the spec."""

from __future__ import annotations

import json

import numpy as np
import pytest

import megatron_ref
from schedule_ref import reference_sample, reference_schedule
from pileprep.training import schedule as sched, schedule_files
from pileprep.core.errors import ConfigError, NotFoundError
from pileprep.core.config import ScheduleConfig
from pileprep.training.order import TrainingOrder


def _check(sizes, L, B, T, S, chunk=None, monkeypatch=None):
    if chunk:
        monkeypatch.setattr(sched, "_CHUNK", chunk)
    cfg = ScheduleConfig(seq_length=L, batch_size=B, train_iters=T, seed=S)
    ns, epochs, doc_idx, sample_idx, shuffle_idx = reference_schedule(sizes, L, B, T, S)
    got = sched.build(np.asarray(sizes, dtype=np.int32), cfg)
    assert cfg.num_samples == ns and got.epochs == epochs
    assert got.doc_idx.dtype == np.int32 and np.array_equal(got.doc_idx, doc_idx)
    assert np.array_equal(got.sample_idx, sample_idx)
    assert got.shuffle_idx.dtype == shuffle_idx.dtype and np.array_equal(got.shuffle_idx, shuffle_idx)
    assert got.sample_idx.dtype == np.int32
    return got


@pytest.mark.parametrize("seed", range(12))
def test_vectorized_equals_loop_on_random_corpora(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    n_docs = int(rng.integers(1, 60))
    sizes = rng.integers(1, 400, size=n_docs)
    L = int(rng.choice([2, 3, 8, 31, 64, 128]))
    B = int(rng.integers(1, 9))
    T = int(rng.integers(1, 40))
    _check(sizes, L, B, T, int(rng.integers(0, 10_000)), chunk=int(rng.integers(1, 50)),
           monkeypatch=monkeypatch)


@pytest.mark.parametrize("sizes,L", [
    ([8] * 20, 8),           # every sample ends exactly on a document boundary
    ([4] * 30, 8),           # two documents per sample, boundaries aligned
    ([9] * 25, 8),           # sample L+1 == document size
    ([1] * 100, 4),          # one-token documents (EOD only)
    ([1000], 16),            # one document, many samples
    ([3, 5, 8, 13, 21], 8),  # mixed, several epochs
])
def test_exact_boundaries_and_epochs(sizes, L, monkeypatch):
    got = _check(sizes, L, 4, 25, 1234, chunk=3, monkeypatch=monkeypatch)
    assert got.epochs >= 1


def test_pythia_numbers():
    cfg = ScheduleConfig()
    assert cfg.num_samples == 147_164_160  # ceil(143000 * 1024 * 1.005), as in Pythia's file names
    assert sched.num_epochs(300_000_000_000, 2048, cfg.num_samples) == 2
    assert sched.num_epochs(400_000_000_000, 2048, cfg.num_samples) == 1
    assert schedule_files.paths("d/pile_text_document", cfg)["doc"].name == (
        "pile_text_document_train_0_indexmap_147164160ns_2048sl_1234s_packedpi_ac_doc_idx.npy")


def test_invalid_settings():
    with pytest.raises(ConfigError):
        ScheduleConfig(seq_length=0).validate()
    with pytest.raises(ConfigError):
        ScheduleConfig(batch_size=-1).validate()


def test_batches_equal_independent_reads(clean_build, monkeypatch):
    cfg = ScheduleConfig(seq_length=64, batch_size=8, train_iters=30, seed=7)
    prefix = clean_build / "pile_text_document"
    s = sched.build(np.asarray(megatron_ref.read_index(f"{prefix}.idx")[1], np.int32), cfg)
    schedule_files.save(s, prefix)
    schedule_files.record(clean_build, cfg)
    order = TrainingOrder(clean_build)
    assert order.cfg == cfg
    docs = megatron_ref.read_documents(prefix)
    ns, epochs, doc_idx, sample_idx, shuffle_idx = reference_schedule(
        [len(d) for d in docs], 64, 8, 30, 7)
    for step in (0, 1, 17, 29):
        batch = order.batch(step)
        assert batch.shape == (8, 65) and batch.dtype == np.uint16
        for r in range(8):
            n = step * 8 + r
            assert batch[r].tolist() == reference_sample(docs, doc_idx, sample_idx, shuffle_idx, n, 64)
        # provenance of each row accounts for every token, in order
        for r, row in enumerate(order.sources(step)):
            assert sum(p["row_end"] - p["row_start"] for p in row) == 65
            rebuilt = []
            for p in row:
                a, b = p["doc_start"], p["doc_end"]
                rebuilt += docs[p["doc"]][a:b]
            assert rebuilt == batch[r].tolist()
    with pytest.raises(ConfigError, match="outside"):
        order.batch(30)
    with pytest.raises(NotFoundError, match="no schedule"):
        TrainingOrder(clean_build, ScheduleConfig(seq_length=32, batch_size=8, train_iters=30, seed=7))


def test_cli_batch_at_where_and_sequences_agree(clean_build, tmp_path, tokenizer_spec, capsys):
    from pileprep.cli.main import main

    args = ["--seq-length", "32", "--batch-size", "4", "--train-iters", "40", "--seed", "3"]
    assert main(["schedule", str(clean_build), "--quiet", *args]) == 0
    prefix = clean_build / "pile_text_document"
    docs = megatron_ref.read_documents(prefix)
    ns, epochs, doc_idx, sample_idx, shuffle_idx = reference_schedule([len(d) for d in docs], 32, 4, 40, 3)
    # batch-at: settings now come from the build's newest schedule
    out = tmp_path / "b.npy"
    assert main(["batch-at", str(clean_build), "--step", "7", "--output", str(out)]) == 0
    batch = np.load(out)
    assert batch.shape == (4, 33)
    for r in range(4):
        assert batch[r].tolist() == reference_sample(docs, doc_idx, sample_idx, shuffle_idx, 28 + r, 32)
    jl = tmp_path / "b.jsonl"
    assert main(["batch-at", str(clean_build), "--step", "7", "--rows", "1,3", "--output", str(jl),
                 "--tokenizer", tokenizer_spec]) == 0
    rows = [json.loads(x) for x in jl.read_text().splitlines()]
    assert [r["row"] for r in rows] == [1, 3] and rows[0]["tokens"] == batch[1].tolist()
    assert rows[0]["text"] and rows[0]["sources"][0]["source"].endswith(".jsonl.zst")
    capsys.readouterr()
    # where: every row a document appears in, and batch-at agrees both ways
    src = rows[0]["sources"][0]
    assert main(["where", str(clean_build), "--doc", f"{src['source']}:{src['line']}"]) == 0
    text = capsys.readouterr().out
    assert f"step       7 row     1  row tokens {src['row_start']}:{src['row_end']}" in text
    from pileprep.training.order import TrainingOrder
    from pileprep.training.lookups import occurrences

    order = TrainingOrder(clean_build)
    for hit in occurrences(order, src["doc"])[:10]:
        row = order.sources(hit["step"], [hit["row"]])[0]
        assert any(p["doc"] == src["doc"] and (p["row_start"], p["row_end"]) == (hit["row_start"], hit["row_end"]) for p in row)
    # every (step, row) of the schedule that includes the doc is found: brute force check
    expected = {(i // 4, i % 4) for i in range(40 * 4)
                if (order.pieces([i]).doc == src["doc"]).any()}
    assert {(h["step"], h["row"]) for h in occurrences(order, src["doc"])} == expected
    # where --text finds the document by a snippet of its text
    doc_text = order.describe_doc(src["doc"])
    snippet = rows[0]["text"][5:40] if len(rows[0]["text"]) > 45 else None
    if snippet and "<|endoftext|>" not in snippet:
        assert main(["where", str(clean_build), "--text", snippet, "--tokenizer", tokenizer_spec]) == 0
        assert f"{doc_text['source']}:" in capsys.readouterr().out
    # sequences: item i is training sample 5*4 + i
    seq = tmp_path / "seq"
    assert main(["sequences", str(clean_build), "--steps", "5:9", "--output", str(seq)]) == 0
    items = megatron_ref.read_documents(seq)
    assert len(items) == 16
    assert items == [reference_sample(docs, doc_idx, sample_idx, shuffle_idx, 20 + i, 32) for i in range(16)]
    # errors are one line, exit 2
    assert main(["batch-at", str(clean_build), "--step", "40"]) == 2
    assert main(["batch-at", str(clean_build), "--step", "1", "--seq-length", "99"]) == 2
    err = capsys.readouterr().err
    assert "outside 0..39" in err and "no schedule" in err
