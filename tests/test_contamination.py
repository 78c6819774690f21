"""``pileprep contamination`` against a brute force over every trained sample (issue #24).

The brute force shares nothing with pileprep's counting: the schedule is ``schedule_ref``'s, each
trained sample is rebuilt from the documents by ``schedule_ref.reference_sample`` and its windows
are compared with every n-gram in Python; corpus occurrences are windows of each document.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import schedule_ref
from test_ngram import SCHEDULES, SYNC, corpus_count, ngram_build, reference, run_cli  # noqa: F401
from pileprep.core.config import ScheduleConfig
from pileprep.formats import suffix
from pileprep.training.contamination import contamination, grams_of
from pileprep.training.order import TrainingOrder

N = 5


def examples_of(docs, rng) -> list[list[int]]:
    """Slices of documents (some whole, some across the EOD), shorter than N, and made up."""
    out = []
    for _ in range(10):
        d = docs[int(rng.integers(len(docs)))]
        a = int(rng.integers(0, max(1, len(d) - 12)))
        out.append(d[a:a + int(rng.integers(6, 12))])
    out.append(docs[3][:-1])  # a whole document but its EOD
    out.append(docs[4][-3:] + docs[5][:4])  # across two documents' boundary (as the stream may)
    out.append(docs[6][2:5])  # shorter than N: looked up whole
    out.append([50_001, 50_002, 50_003, 50_004, 50_005, 50_006])  # nowhere
    out.append(docs[7][1:9] + [50_007] + docs[7][9:14])  # partly found, not whole
    return out


def brute(ref, cfg, examples, first_step, end_step):
    docs, doc_idx, sample_idx, shuffle_idx = ref
    B, L = cfg["batch_size"], cfg["seq_length"]
    grams = [grams_of(e, N) for e in examples]
    wanted = {g for gs in grams for g in gs} | {tuple(e) for e in examples}
    first = {}
    for n in range(first_step * B, end_step * B):
        tokens = schedule_ref.reference_sample(docs, doc_idx, sample_idx, shuffle_idx, n, L)
        for g in wanted - first.keys():
            m = len(g)
            if any(tuple(tokens[i:i + m]) == g for i in range(len(tokens) - m + 1)):
                first[g] = n
    rows = []
    for e, gs in zip(examples, grams):
        trained = [first[g] for g in gs if g in first]
        corpus = [corpus_count(docs, list(g)) for g in gs]
        whole = corpus_count(docs, e) if all(corpus) else 0
        rows.append((len(gs), sum(c > 0 for c in corpus), len(trained), min(trained, default=-1),
                     whole, first.get(tuple(e), -1) if all(corpus) else -1))
    return rows


@pytest.mark.parametrize("steps", [None, pytest.param((40, 170), marks=pytest.mark.slow)])
def test_contamination_equals_a_brute_force_over_every_trained_sample(ngram_build, steps):
    cfg = SCHEDULES[0]
    order = TrainingOrder(ngram_build, ScheduleConfig(**cfg))
    ref = reference(order, cfg)
    examples = examples_of(ref[0], np.random.default_rng(7))
    first, end = steps or (0, cfg["train_iters"])
    got = contamination(order, suffix.SuffixIndex(ngram_build, order.data), examples, N, first, end)
    want = brute(ref, cfg, examples, first, end)
    assert list(zip(got.ngrams.tolist(), got.in_corpus.tolist(), got.trained.tolist(),
                    got.first_sample.tolist(), got.verbatim_corpus.tolist(),
                    got.verbatim_first_sample.tolist())) == want
    # the draw covers what it should: whole and partial hits, an absent example, late firsts
    assert any(w[4] > 0 for w in want) and any(0 < w[1] < w[0] for w in want)
    assert any(w[1] == 0 for w in want) and any(w[3] > 0 for w in want)


def test_contamination_command_reads_jsonl_parquet_and_hf_inputs(ngram_build, tokenizer, tmp_path):
    import pyarrow as pa

    order = TrainingOrder(ngram_build)
    docs = [np.asarray(order.data[i]).tolist() for i in range(6)]
    texts = [tokenizer.decode(d[:-1]) for d in docs]
    bench = tmp_path / "quiz.jsonl"
    lines = [json.dumps({"question": t[10:200]}) for t in texts[:4]]
    lines += ["{not json", json.dumps({"other": 1}), json.dumps({"question": "zq xv wk jj"})]
    bench.write_text("\n".join(lines) + "\n")
    pq.write_table(pa.table({"question": [texts[4][:300], texts[5][:300]]}), tmp_path / "more.parquet")
    hf_dir = tmp_path / "hubset"
    hf_dir.mkdir()
    (hf_dir / "train.jsonl").write_text(json.dumps({"question": texts[0][:150]}) + "\n")
    out, summary, png = tmp_path / "c.parquet", tmp_path / "s.json", tmp_path / "c.png"
    code, stdout, err = run_cli("contamination", str(ngram_build), "--input", str(bench),
                                "--input", str(tmp_path / "more.parquet"), "--input", f"hf:{hf_dir}",
                                "--field", "question", "--ngram", "8", "--output", str(out),
                                "--summary", str(summary), "--plot", str(png), "--scheduler",
                                "synchronous")
    assert code == 0, err
    assert "Traceback" not in err
    table = pq.read_table(out).to_pydict()
    assert table["benchmark"] == ["quiz"] * 5 + ["more"] * 2 + ["hubset"]
    assert table["line"][:5] == [0, 1, 2, 3, 6]
    # each row against the library on the same tokens, and the verbatim ones against the corpus
    index = suffix.SuffixIndex(ngram_build, order.data)
    asked = [json.loads(x)["question"] for x in lines[:4]] + ["zq xv wk jj"] + [texts[4][:300], texts[5][:300], texts[0][:150]]
    ids = [tokenizer.encode(" " + t).ids for t in asked]
    lib = contamination(order, index, ids, 8, 0, order.cfg.train_iters)
    assert table["in_corpus"] == lib.in_corpus.tolist() and table["ngrams"] == lib.ngrams.tolist()
    assert table["verbatim_in_corpus"] == lib.verbatim_corpus.tolist()
    assert table["in_corpus"][0] > 0 and table["in_corpus"][4] == 0
    s = json.loads(summary.read_text())["benchmarks"]
    assert [b["examples"] for b in s] == [5, 2, 1]
    assert s[0]["skipped"]["invalid_json"]["first"].endswith("quiz.jsonl:4")
    assert s[0]["skipped"]["missing_text"]["rows"] == 1
    assert "skipped 1 row(s): missing_text" in stdout
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args,named", [
    (["--ngram", "0"], "--ngram"),
    (["--output", "x.csv"], "--output"),
    (["--name", "a", "--name", "b"], "--name"),
    (["--output", "/nowhere/x.parquet"], "does not exist"),
    (["--plot", "c.png", "--bins", "0"], "--bins"),
    (["--field", "question"], "no example with a text in 'question'"),
    (["--input", "{bench}"], "give each a --name"),
])
def test_contamination_bad_settings_are_one_line_errors(ngram_build, tmp_path, args, named):
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"text": "hello"}) + "\n")
    code, _, err = run_cli("contamination", str(ngram_build), "--input", str(bench),
                           "--scheduler", "synchronous", "--quiet", *[a.format(bench=bench) for a in args])
    assert code == 2 and len(err.strip().splitlines()) == 1 and named in err, err
    assert not (ngram_build / "ngram" / ".contamination-work").exists()
