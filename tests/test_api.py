"""The reader API (pileprep.open), step-range analysis, and the GPT-NeoX config fragment.

Expected values come from the independent readers in megatron_ref.py (the .bin/.idx layout)
and schedule_ref.py (GPT-NeoX's index, one sample at a time), and from pyarrow reading the
provenance file directly.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

import pileprep
from pileprep.training import steps
from pileprep.cli.main import main
from pileprep.core.errors import ConfigError, NotFoundError

from helpers import API_SCHEDULE
from megatron_ref import read_documents
from schedule_ref import reference_sample, reference_schedule

L, B, T, SEED = (API_SCHEDULE[k] for k in ("seq_length", "batch_size", "train_iters", "seed"))


@pytest.fixture(scope="module")
def ref(scheduled_build):
    """Documents and the schedule, computed without pileprep's code."""
    docs = read_documents(scheduled_build / "pile_text_document")
    _, _, doc_idx, sample_idx, shuffle_idx = reference_schedule([len(d) for d in docs], L, B, T, SEED)
    prov = pq.read_table(scheduled_build / "provenance.parquet").to_pylist()
    return docs, doc_idx, sample_idx, shuffle_idx, prov


def test_documents_are_views_of_the_bin(scheduled_build, ref):
    docs, *_, prov = ref
    build = pileprep.open(scheduled_build)
    assert len(build) == len(docs) and build.num_tokens == sum(map(len, docs))
    for i in (0, 1, len(docs) // 2, len(docs) - 1, -1):
        assert build[i].tolist() == docs[i]
        assert np.shares_memory(build[i], build.tokens)
    for i in (0, 7, len(docs) - 1):
        want = {k: prov[i][k] for k in ("source", "line", "pile_set_name", "tokens")}
        assert build.source(i) == want
        assert build.find(want["source"], want["line"]) == i
    assert build.report["kept"] == len(docs)
    assert [i["name"] for i in build.manifest["inputs"]] == ["00.jsonl.zst", "01.jsonl.zst", "02.jsonl.zst"]
    with pytest.raises(IndexError):
        build[len(docs)]
    with pytest.raises(NotFoundError, match="not in the dataset"):
        build.find("00.jsonl.zst", 10**9)


def test_open_refuses_a_directory_without_a_build(tmp_path):
    with pytest.raises(NotFoundError, match="no finished pileprep build"):
        pileprep.open(tmp_path)


def test_schedule_batches_and_resume_iterator_match_reference(scheduled_build, ref):
    docs, doc_idx, sample_idx, shuffle_idx, _ = ref
    order = pileprep.open(scheduled_build).schedule()
    assert (order.cfg.seq_length, order.cfg.batch_size, order.cfg.train_iters) == (L, B, T)
    for step in (0, 1, 117, T - 1):
        want = [reference_sample(docs, doc_idx, sample_idx, shuffle_idx, step * B + r, L) for r in range(B)]
        assert order.batch(step).tolist() == want
    resumed = list(order.iter_batches(start_step=T - 3))
    assert [s for s, _ in resumed] == [T - 3, T - 2, T - 1]
    for step, batch in resumed:
        assert batch.tolist() == [reference_sample(docs, doc_idx, sample_idx, shuffle_idx, step * B + r, L)
                                  for r in range(B)]
    assert [s for s, _ in order.iter_batches(5, 7)] == [5, 6]
    assert list(order.iter_batches(T)) == []  # resuming after the last step: nothing left
    with pytest.raises(ConfigError, match="outside"):
        next(order.iter_batches(T + 1))
    with pytest.raises(NotFoundError, match="no schedule"):
        pileprep.open(scheduled_build).schedule(seq_length=64)


def test_sources_rebuild_each_row(scheduled_build, ref):
    docs, *_ = ref
    order = pileprep.open(scheduled_build).schedule()
    batch = order.batch(42)
    for row, pieces in zip(batch, order.sources(42)):
        rebuilt = []
        for p in pieces:
            a, b = p["doc_start"], p["doc_end"]
            rebuilt += docs[p["doc"]][a:b]
            assert (p["row_end"] - p["row_start"]) == b - a
        assert rebuilt == row.tolist()


def _reference_pieces(doc_idx, sample_idx, shuffle_idx, sizes, n):
    k = int(shuffle_idx[n])
    (i0, o0), (i1, o1) = sample_idx[k], sample_idx[k + 1]
    if i0 == i1:
        return [(int(doc_idx[i0]), o1 - o0 + 1)]
    out = [(int(doc_idx[i0]), sizes[doc_idx[i0]] - o0)]
    out += [(int(doc_idx[i]), sizes[doc_idx[i]]) for i in range(i0 + 1, i1)]
    return out + [(int(doc_idx[i1]), o1 + 1)]


def test_step_range_pieces_subsets_and_documents(scheduled_build, ref):
    docs, doc_idx, sample_idx, shuffle_idx, prov = ref
    sizes = [len(d) for d in docs]
    order = pileprep.open(scheduled_build).schedule()
    got = steps.pieces(order, 20, 120)
    want = [(n, d, t) for n in range(20 * B, 120 * B)
            for d, t in _reference_pieces(doc_idx, sample_idx, shuffle_idx, sizes, n)]
    assert list(zip(got.sample.tolist(), got.doc.tolist(), got.tokens.tolist())) == want

    table, names = steps.subset_tokens(order, got)
    per_subset = defaultdict(int)
    for _, d, t in want:
        per_subset[prov[d]["pile_set_name"]] += t
    assert {n: int(v) for n, v in zip(names, table[0]) if v} == dict(per_subset)
    assert table.sum() == 100 * B * (L + 1)

    seen, first = defaultdict(int), {}
    for n, d, t in want:
        seen[d] += t
        first.setdefault(d, n)
    doc, tokens, first_sample = steps.documents(got)
    assert doc.tolist() == sorted(seen)
    assert tokens.tolist() == [seen[d] for d in sorted(seen)]
    assert first_sample.tolist() == [first[d] for d in sorted(seen)]


def test_seen_and_plot_commands(scheduled_build, ref, tmp_path, capsys):
    docs, doc_idx, sample_idx, shuffle_idx, prov = ref
    sizes = [len(d) for d in docs]
    assert main(["seen", str(scheduled_build), "--steps", "0:50", "-o", str(tmp_path / "seen.csv")]) == 0
    out = capsys.readouterr().out
    distinct = {d for n in range(50 * B)
                for d, _ in _reference_pieces(doc_idx, sample_idx, shuffle_idx, sizes, n)}
    assert f"from {len(distinct):,} documents" in out
    lines = (tmp_path / "seen.csv").read_text().splitlines()
    assert len(lines) == len(distinct) + 1 and lines[0].startswith('"doc","source","line"')

    pngs = []
    for name in ("a.png", "b.png"):
        assert main(["plot", str(scheduled_build), "--bins", "8", "-o", str(tmp_path / name)]) == 0
        pngs.append((tmp_path / name).read_bytes())
    assert pngs[0][:8] == b"\x89PNG\r\n\x1a\n" and pngs[0] == pngs[1]  # same figure, same bytes
    assert "8 step ranges" in capsys.readouterr().out


def test_torch_is_imported_only_by_the_adapter(scheduled_build):
    code = ("import sys, pileprep; b = pileprep.open(sys.argv[1]); o = b.schedule(); "
            "o.batch(3); o.sources(3); list(o.iter_batches(198)); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(scheduled_build)], check=True)


def test_torch_dataset_yields_the_trainers_batches(scheduled_build, ref):
    torch = pytest.importorskip("torch", reason="optional adapter; `make test` installs torch "
                                "when a CPU wheel is available")
    from torch.utils.data import DataLoader

    docs, doc_idx, sample_idx, shuffle_idx, _ = ref
    order = pileprep.open(scheduled_build).schedule()
    ds = order.torch_dataset(start_step=100, end_step=103)
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 3 * B
    for step, batch in zip(range(100, 103), DataLoader(ds, batch_size=B, shuffle=False)):
        assert batch.dtype == torch.int64
        assert batch.tolist() == [reference_sample(docs, doc_idx, sample_idx, shuffle_idx, step * B + r, L)
                                  for r in range(B)]
    with pytest.raises(IndexError):
        ds[3 * B]


def test_neox_fragment_names_the_schedule_files(scheduled_build, tokenizer_spec, tmp_path, capsys):
    frags = sorted(scheduled_build.glob("gpt_neox_*.yml"))
    assert [f.name for f in frags] == [f"gpt_neox_{L}sl_{B}bs_{T}it_{SEED}s.yml"]
    conf = yaml.safe_load(frags[0].read_text())
    prefix = conf["train-data-paths"][0]
    assert prefix == str((scheduled_build / "pile_text_document").resolve())
    for ext in (".bin", ".idx"):
        assert (scheduled_build / f"pile_text_document{ext}").samefile(prefix + ext)
    assert conf["data-impl"] == "mmap" and conf["pack-impl"] == "packed" and conf["allow-chopped"] is True
    assert (conf["seq-length"], conf["train_batch_size"], conf["train-iters"], conf["seed"]) == (L, B, T, SEED)
    assert conf["tokenizer-type"] == "HFTokenizer"
    # The files GPT-NeoX looks for, named from the fragment's values alone.
    ns = math.ceil(conf["train-iters"] * conf["train_batch_size"] * 1.005)
    base = f"{prefix}_train_0_indexmap_{ns}ns_{conf['seq-length']}sl_{conf['seed']}s_packedpi_ac"
    for kind in ("doc", "sample", "shuffle"):
        assert (scheduled_build / f"{base}_{kind}_idx.npy".rsplit("/", 1)[1]).exists()
    # Every suggested split multiplies out to the global batch.
    text = frags[0].read_text()
    import re
    splits = re.findall(r"(\d+) data-parallel GPUs: train_micro_batch_size_per_gpu (\d+), "
                        r"gradient_accumulation_steps (\d+)", text)
    assert splits and all(int(g) * int(m) * int(a) == B for g, m, a in splits)
    # the fragment is outside the manifest: it holds this machine's absolute paths
    assert not any(k.startswith("gpt_neox") for k in pileprep.open(scheduled_build).manifest["outputs"])
