"""The n-gram index and term counts over training (issue #16), against independent code.

The brute force here never touches pileprep's counting: each schedule comes from
``schedule_ref`` (a one-sample-at-a-time loop written from the description), every trained
sample's L+1 tokens from ``schedule_ref.reference_sample`` over the documents, and the
n-grams of every sample are counted with a Python dictionary. The build is tiny and trained for
several epochs, so documents repeat; queries are drawn inside documents, across the document
boundaries the shuffle made, across sample boundaries and from repeated documents.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter as Tally
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import schedule_ref
from helpers import tiny_build
from pileprep.jobs.index import build_index, index_shard
from pileprep.cli.main import main
from pileprep.core.config import ClusterConfig, ScheduleConfig
from pileprep.core import atomic
from pileprep.core.errors import ConfigError, FormatError, IntegrityError, NotFoundError
from pileprep.core.files import NGRAM_META, PIECES_SUFFIX, data_path, dataset_prefix, index_path
from pileprep.formats import suffix
from pileprep.formats.indexed import IndexedDataset
from pileprep.outputs.export import memorization_tables
from pileprep.training import schedule_files, streammap
from pileprep.training.lookups import doc_and_offset, docs_by_text
from pileprep.jobs.count import count_terms
from pileprep.training import ngram
from pileprep.training.ngram import Counter
from pileprep.training.order import TrainingOrder

SCHEDULES = [dict(seq_length=32, batch_size=4, train_iters=400, seed=3),
             dict(seq_length=17, batch_size=3, train_iters=500, seed=8)]
SYNC = ClusterConfig(workers=1, scheduler="synchronous")


@pytest.fixture(scope="module")
def ngram_build(tokenizer_spec, tmp_path_factory) -> Path:
    """~40 documents, ~25k tokens, two schedules of several epochs, an index of 6 shards."""
    out = tiny_build(tmp_path_factory.mktemp("ngram"), tokenizer_spec, SCHEDULES[0])
    schedule_files.build_for_dataset(out, dataset_prefix(out, "pile"), ScheduleConfig(**SCHEDULES[1]),
                                     quiet=True)
    meta = build_index(out, SYNC, shard_tokens=5000, quiet=True)
    assert len(meta["shards"]) >= 4 and meta["last_token"] == 0
    return out


def reference(order: TrainingOrder, cfg: dict):
    """The documents and the reference schedule's arrays."""
    docs = [np.asarray(order.data[i]).tolist() for i in range(len(order.data))]
    _, epochs, doc_idx, sample_idx, shuffle_idx = schedule_ref.reference_schedule(
        order.data.sizes, cfg["seq_length"], cfg["batch_size"], cfg["train_iters"], cfg["seed"])
    assert epochs >= 2, "the test build must be trained for several epochs"
    return docs, doc_idx, sample_idx, shuffle_idx


def brute_force(ref, cfg: dict, queries: list[list[int]], first: int, end: int, edges: list[int],
                firsts: list | None = None):
    """(samples, occurrences) per query and bin: every trained sample's n-grams, tallied (and
    each query's first sample holding it, into ``firsts``)."""
    docs, doc_idx, sample_idx, shuffle_idx = ref
    B, L = cfg["batch_size"], cfg["seq_length"]
    lengths = sorted({len(q) for q in queries})
    samples = np.zeros((len(queries), len(edges) - 1), np.int64)
    occurrences = np.zeros_like(samples)
    for n in range(first * B, end * B):
        tokens = schedule_ref.reference_sample(docs, doc_idx, sample_idx, shuffle_idx, n, L)
        grams = Tally(tuple(tokens[i:i + m]) for m in lengths for i in range(len(tokens) - m + 1))
        b = int(np.searchsorted(edges, n // B, side="right")) - 1
        for qi, q in enumerate(queries):
            c = grams.get(tuple(q), 0)
            occurrences[qi, b] += c
            samples[qi, b] += c > 0
            if firsts is not None and c and firsts[qi] < 0:
                firsts[qi] = n
    return samples, occurrences


def windows_equal(tokens, q) -> np.ndarray:
    """Start positions where ``tokens`` holds ``q``: every window compared, no index."""
    tokens = np.asarray(tokens)
    if len(tokens) < len(q):
        return np.zeros(0, np.int64)
    return np.flatnonzero((np.lib.stride_tricks.sliding_window_view(tokens, len(q)) == q).all(axis=1))


def corpus_count(docs, q) -> int:
    return sum(len(windows_equal(d, q)) for d in docs)


def pick_queries(ref, cfg: dict, rng) -> list[list[int]]:
    """n-grams inside documents, across the stream's document boundaries, across sample
    boundaries, single tokens (EOD included), and one that occurs nowhere."""
    docs, doc_idx, sample_idx, shuffle_idx = ref
    stream = [t for i in doc_idx[:200] for t in docs[i]]
    bounds = np.cumsum([len(docs[i]) for i in doc_idx[:199]])
    L = cfg["seq_length"]
    out = []
    for _ in range(12):  # inside a document
        d = docs[int(rng.integers(len(docs)))]
        m = int(rng.integers(1, 6))
        p = int(rng.integers(0, max(1, len(d) - m)))
        out.append(d[p:p + m])
    for b in rng.choice(bounds[:-1], 8, replace=False):  # across a document boundary (EOD inside)
        a = int(rng.integers(1, 4))
        out.append(stream[b - a:b + int(rng.integers(1, 4))])
    for k in rng.integers(1, len(stream) // L - 1, 6):  # across a sample boundary
        p = int(k) * L
        out.append(stream[p - int(rng.integers(1, 3)):p + int(rng.integers(1, 4))])
    out += [[0], [0, 0], [docs[0][0]], [50000, 50001, 50002]]
    return [q for q in out if q]


# The first case holds every kind of query (inside documents, across document and sample
# boundaries, repeated documents: asserted below) and stays in the fast set; the other schedule,
# partial step ranges and other bins are slow (each re-runs the brute force, ~1.5 s).
@pytest.mark.parametrize("which,steps,bins", [
    (0, None, 4),
    pytest.param(0, (37, 251), 3, marks=pytest.mark.slow),
    pytest.param(1, (0, 1), 1, marks=pytest.mark.slow),
    pytest.param(1, None, 7, marks=pytest.mark.slow)])
def test_count_equals_a_brute_force_over_every_trained_sample(ngram_build, which, steps, bins):
    cfg = SCHEDULES[which]
    order = TrainingOrder(ngram_build, ScheduleConfig(**cfg))
    ref = reference(order, cfg)
    queries = pick_queries(ref, cfg, np.random.default_rng(which * 10 + bins))
    first, end = steps or (0, cfg["train_iters"])
    index = suffix.SuffixIndex(ngram_build, order.data)
    # a small unit, so queries are split over several units (samples counted once across them)
    got = Counter(order, index, first, end, bins, unit=23).count(queries)
    samples, occurrences = brute_force(ref, cfg, queries, first, end, got.edges)
    assert got.edges[0] == first and got.edges[-1] == end and len(got.edges) == bins + 1
    assert got.samples.tolist() == samples.tolist()
    assert got.occurrences.tolist() == occurrences.tolist()
    assert got.corpus.tolist() == [corpus_count(ref[0], q) for q in queries]
    assert (np.diff(got.cumulative("samples"), axis=1) >= 0).all()
    # the draw covers what it should: repeats, boundary-only n-grams, and absent ones
    if steps is None:
        assert any(s > c > 0 for s, c in zip(samples.sum(axis=1), got.corpus))  # repeated docs
        assert any(s > 0 and c == 0 for s, c in zip(samples.sum(axis=1), got.corpus))
        assert (samples.sum(axis=1) == 0).any()
        assert (occurrences > samples).any()  # a sample holding a query twice counts once


@pytest.mark.parametrize("which,steps,bins", [
    (0, None, 4), pytest.param(1, (13, 401), 5, marks=pytest.mark.slow)])
def test_both_count_strategies_equal_the_brute_force_on_every_query(ngram_build, which, steps, bins):
    """The index's hits and the streaming pass (run as tasks of a few samples each, so bins and
    parts cut each other) against the brute force, query by query; hashed keys too (long
    queries), repeats, and ids no token holds."""
    cfg = SCHEDULES[which]
    order = TrainingOrder(ngram_build, ScheduleConfig(**cfg))
    ref = reference(order, cfg)
    queries = pick_queries(ref, cfg, np.random.default_rng(which + 40))
    docs = ref[0]
    queries += [docs[1][:9], docs[2][3:15], queries[0], [70000], [1 << 40, 3]]
    first, end = steps or (0, cfg["train_iters"])
    edges = ngram_edges(first, end, bins)
    firsts = [-1] * len(queries)
    samples, occurrences = brute_force(ref, cfg, queries, first, end, edges, firsts)
    got = {}
    for strategy in ("index", "stream"):
        with patch_part_tokens(cfg["seq_length"] * 7):
            c = count_terms(order, queries, first, end, bins, strategy)
        assert c.strategy == [strategy] * len(queries)
        assert c.samples.tolist() == samples.tolist(), strategy
        assert c.occurrences.tolist() == occurrences.tolist(), strategy
        assert c.first.tolist() == firsts, strategy
        assert c.first_step(cfg["batch_size"]).tolist() == [f // cfg["batch_size"] if f >= 0 else -1
                                                            for f in firsts]
        assert c.corpus.tolist() == [corpus_count(docs, q) if max(q) < 1 << 16 else 0 for q in queries]
        got[strategy] = c
    assert samples.sum() > 0 and (occurrences > samples).any()


def test_auto_sends_frequent_queries_to_the_pass_and_rare_ones_to_the_index():
    tokens = 10 ** 9
    hits = np.array([10, 10 ** 4, 10 ** 7, 10 ** 9, 0])
    # the 10^9 one pays for the pass; then the 10^7 one costs far less in it than by its hits
    assert ngram.choose_stream(hits, tokens, workers=2).tolist() == [False, False, True, True, False]
    assert not ngram.choose_stream(np.array([10, 100]), tokens, workers=2).any()
    # a pass over a thousand times the tokens is not worth it for the same term
    assert not ngram.choose_stream(np.array([10 ** 7]), tokens * 1000, workers=2).any()


def ngram_edges(first, end, bins):
    return ngram.bin_edges(first, end, bins)


@contextlib.contextmanager
def patch_part_tokens(n: int):
    from pileprep.jobs import count as count_job
    old = count_job.PART_TOKENS, ngram.SCAN_SAMPLES, os.environ.get("PILEPREP_MAP_BUDGET")
    count_job.PART_TOKENS, ngram.SCAN_SAMPLES = n, 3
    os.environ["PILEPREP_MAP_BUDGET"] = "1"  # new maps at every block: the reader is made again
    try:
        yield
    finally:
        count_job.PART_TOKENS, ngram.SCAN_SAMPLES = old[:2]
        if old[2] is None:
            os.environ.pop("PILEPREP_MAP_BUDGET")
        else:
            os.environ["PILEPREP_MAP_BUDGET"] = old[2]


def stream_of(ref) -> tuple[list[int], list[int]]:
    """The training stream's tokens and each doc_idx entry's first position in it."""
    docs, doc_idx = ref[0], ref[1]
    starts = np.concatenate([[0], np.cumsum([len(docs[d]) for d in doc_idx])]).tolist()
    return [t for d in doc_idx for t in docs[d]], starts


def test_stream_map_equals_the_schedule_read_entry_by_entry(ngram_build):
    cfg = SCHEDULES[1]
    order = TrainingOrder(ngram_build, ScheduleConfig(**cfg))
    ref = reference(order, cfg)
    _, starts = stream_of(ref)
    doc_idx, shuffle_idx = ref[1], ref[3]
    m = streammap.open_map(order, ngram_build)
    # every copy of every document: (document, entry in doc_idx, stream start), by document
    want = sorted((int(d), i, starts[i]) for i, d in enumerate(doc_idx))
    rows = m.copies_of(np.arange(len(order.data))).reshape(-1)
    got = [(i // m.epochs, int(e), int(a)) for i, (a, e) in enumerate(rows.tolist())]
    assert got == want
    inverse = {int(k): n for n, k in enumerate(shuffle_idx)}
    assert m.trained_at(np.arange(len(shuffle_idx))).tolist() == [inverse[k] for k in range(len(shuffle_idx))]
    # a rebuilt schedule (other modification time) is mapped again, not read from the old map
    names = ngram_build / "ngram" / "stream-maps"
    trained = next(names.glob(f"{schedule_files.label(order.prefix, order.cfg)}_trained_at.npy"))
    np.save(trained, np.zeros(len(shuffle_idx), np.int64))
    os.utime(schedule_files.find(order.prefix, order.cfg)["shuffle"])
    again = streammap.open_map(TrainingOrder(ngram_build, ScheduleConfig(**cfg)), ngram_build)
    assert again.trained_at(np.arange(len(shuffle_idx))).tolist() == [inverse[k] for k in range(len(shuffle_idx))]


def test_stream_map_refuses_a_schedule_that_is_not_whole_epochs_of_a_permutation(tmp_path):
    sizes = np.array([3, 5, 2], np.int32)
    streammap.build_copies(np.array([2, 0, 1, 1, 0, 2]), sizes, 2, tmp_path / "ok.npy")
    # the stream: doc 2 at 0, doc 0 at 2, doc 1 at 5 and 10, doc 0 at 15, doc 2 at 18
    ok = np.load(tmp_path / "ok.npy")
    assert ok["start"].tolist() == [2, 15, 5, 10, 0, 18] and ok["entry"].tolist() == [1, 4, 2, 3, 0, 5]
    with pytest.raises(IntegrityError, match="document 1 more than 2 times"):
        streammap.build_copies(np.array([1, 0, 1, 1, 0, 2]), sizes, 2, tmp_path / "c.npy")
    with pytest.raises(IntegrityError, match="outside"):
        streammap.build_copies(np.array([1, 0, 1, 3, 0, 2]), sizes, 2, tmp_path / "c.npy")
    with pytest.raises(IntegrityError, match="not a permutation"):
        streammap.build_trained(np.array([2, 0, 2, 1]), tmp_path / "t.npy")
    assert not (tmp_path / "c.npy").exists() and not (tmp_path / "t.npy").exists()


def test_a_query_across_several_documents_is_followed_document_by_document(ngram_build):
    """Across a boundary the stream after a copy is compared with the rest of the query; when
    the next document is shorter than that rest, the comparison walks on into the ones after."""
    cfg = SCHEDULES[0]
    order = TrainingOrder(ngram_build, ScheduleConfig(**cfg))
    ref = reference(order, cfg)
    stream, starts = stream_of(ref)
    index = suffix.SuffixIndex(ngram_build, order.data)
    counter = Counter(order, index, 0, cfg["train_iters"])
    short = min(range(len(ref[1]) - 2), key=lambda i: len(ref[0][ref[1][i]]))  # entry of a short doc
    entries = np.array([short, short + 1, 0, len(ref[1]) - 1, len(ref[1])])
    for length in (1, 3, len(ref[0][ref[1][short]]) + 5):
        rest = [stream[starts[e]:starts[e] + length] for e in entries.tolist()]
        for e, r in zip(entries.tolist(), rest):
            assert counter._starts_with(np.array([e]), r).tolist() == [len(r) == length]
            if r:
                wrong = r[:-1] + [r[-1] + 1]
                assert counter._starts_with(np.array([e]), wrong).tolist() == [False]
        same = [r for r in rest if len(r) == length][0]
        want = [stream[starts[e]:starts[e] + length] == same for e in entries.tolist()]
        assert counter._starts_with(entries, same).tolist() == want


def test_index_finds_every_position(ngram_build):
    order = TrainingOrder(ngram_build)
    index = suffix.SuffixIndex(ngram_build, order.data)
    tokens = np.asarray(order.data.tokens)
    rng = np.random.default_rng(5)
    found = 0
    for _ in range(40):
        m = int(rng.integers(1, 5))
        p = int(rng.integers(0, len(tokens) - m))
        q = tokens[p:p + m].tolist()
        want = windows_equal(tokens, q).tolist()
        got = sorted(int(x) for pos in index.positions(q, at_once=3) for x in pos)
        # positions across a shard's end are not indexed: they cross a document boundary
        ends = {s.end for s in index.shards}
        want = [i for i in want if not any(i < e < i + m for e in ends)]
        assert got == want
        found += bool(got)
    assert found >= 30


def test_the_suffix_file_holds_each_shards_sorted_suffixes_and_every_strided_key(ngram_build):
    """Against Python's sort of the token lists (no libdivsufsort) and keys packed by hand."""
    meta = atomic.read_json(ngram_build / "ngram" / NGRAM_META)
    assert meta["version"] == 2 and meta["key_stride"] == suffix.KEY_STRIDE
    tokens = np.fromfile(data_path(dataset_prefix(ngram_build, "pile")), np.uint16).tolist()
    rows = np.fromfile(ngram_build / "ngram" / "suffixes.sa", "<u4")
    assert len(rows) == len(tokens) == meta["tokens"]
    keys = []
    for k, shard in enumerate(meta["shards"]):
        a, b = shard["start"], shard["end"]
        mine = tokens[a:b]
        assert rows[a:b].tolist() == sorted(range(b - a), key=lambda i: mine[i:])
        for r in range(0, b - a, meta["key_stride"]):
            head = (mine[rows[a + r]:] + [0, 0, 0])[:3]
            keys.append((k << 48) | (head[0] << 32) | (head[1] << 16) | head[2])
    assert np.load(ngram_build / "ngram" / "keys.npy").tolist() == keys


@pytest.mark.parametrize("stride", [1, 3, 64])
def test_lookups_narrowed_by_keys_find_every_position(ngram_build, tmp_path, stride):
    """Keys every ``stride`` rows (so the narrowing matters at this size); queries shorter
    than, as long as and longer than a key, absent ones, and ids no uint16 token can hold;
    asked one by one and as one batch of mixed lengths."""
    copy = tmp_path / "copy"
    shutil.copytree(ngram_build, copy, ignore=shutil.ignore_patterns("ngram"))
    build_index(copy, SYNC, shard_tokens=5000, quiet=True, key_stride=stride)
    data = IndexedDataset(dataset_prefix(copy, "pile"))
    index = suffix.SuffixIndex(copy, data)
    tokens = np.asarray(data.tokens)
    ends = {s.end for s in index.shards}
    rng = np.random.default_rng(stride)
    queries = [tokens[p:p + m].tolist() for m in (1, 2, 3, 4, 7)
               for p in rng.integers(0, len(tokens) - m, 8)]
    queries += [[0], [0, 0], [65535], [1, 2, 3, 4, 5], [70000], [3, -1]]
    want = [[i for i in windows_equal(tokens, q).tolist() if not any(i < e < i + len(q) for e in ends)]
            if min(q) >= 0 else [] for q in queries]
    for q, w in zip(queries, want):
        assert sorted(int(x) for pos in index.positions(q) for x in pos) == w, q
    assert index.counts(queries).tolist() == [len(w) for w in want]
    assert sum(map(len, want)) > len(queries)


def test_an_index_of_format_version_1_is_refused_then_rebuilt(ngram_build, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ngram_build, copy)
    meta = atomic.read_json(copy / "ngram" / NGRAM_META)
    atomic.write_json(copy / "ngram" / NGRAM_META, {**meta, "version": 1})
    (copy / "ngram" / "shard-00000.sa").write_bytes(b"old")
    code, _, err = run_cli("count", str(copy), "--ids", "5")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "format version 1" in err and f"rebuild it with `pileprep index {copy}`" in err
    meta = build_index(copy, SYNC, shard_tokens=5000, quiet=True)
    assert not meta["reused"] and not (copy / "ngram" / "shard-00000.sa").exists()
    code, out, _ = run_cli("count", str(copy), "--ids", "5")
    assert code == 0 and "in the corpus" in out


def test_doc_and_offset_of_every_token_position(ngram_build):
    data = TrainingOrder(ngram_build).data
    want = [(d, o) for d in range(len(data)) for o in range(int(data.sizes[d]))]
    doc, offset = doc_and_offset(data, np.arange(len(want)))
    assert list(zip(doc.tolist(), offset.tolist())) == want


def test_the_shard_budget_is_below_two_gib_of_sorted_bytes_per_dtype():
    assert suffix.shard_budget(None, np.uint16) == suffix.DEFAULT_SHARD_TOKENS
    assert suffix.shard_budget((1 << 29) - 1, np.int32) == (1 << 29) - 1
    for given, dtype in ((0, np.uint16), (1 << 30, np.uint16), (1 << 29, np.int32)):
        limit = f"{(1 << 31) // np.dtype(dtype).itemsize - 1:,}"
        with pytest.raises(ConfigError, match=f"^--shard-tokens must be between 1 and {limit} "
                                              f"for {np.dtype(dtype)} tokens$"):
            suffix.shard_budget(given, dtype)


def test_shards_are_whole_documents_within_the_budget():
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = rng.integers(1, 20, int(rng.integers(1, 30)))
        budget = int(rng.integers(1, 40))
        for chunk in (1, 3, 1 << 22):
            got = suffix.shard_ranges(sizes, budget, chunk=chunk)
            ends = np.concatenate([[0], np.cumsum(sizes)])
            assert [g[0] for g in got][0] == 0 and got[-1][1] == len(sizes)
            for (d0, d1, t0, t1), nxt in zip(got, got[1:] + [None]):
                assert (t0, t1) == (ends[d0], ends[d1])
                assert t1 - t0 <= budget or d1 == d0 + 1
                if nxt is not None:
                    assert nxt[0] == d1 and ends[d1 + 1] - t0 > budget  # greedy: the next did not fit


def test_a_shard_reads_and_sorts_the_same_tokens_from_one_bin_or_pieces(ngram_build, tmp_path):
    prefix = dataset_prefix(ngram_build, "pile")
    data = IndexedDataset(prefix)
    whole = np.fromfile(data_path(prefix), data.dtype)
    pieced = tmp_path / "pieced"  # cut every 3001 tokens: not at documents, inside shards
    shutil.copy(index_path(prefix), index_path(pieced))
    cuts = list(range(0, len(whole), 3001))
    paths = [tmp_path / f"piece-{i}.bin" for i in range(len(cuts))]
    for path, a in zip(paths, cuts):
        whole[a:a + 3001].tofile(path)
    (tmp_path / f"pieced{PIECES_SUFFIX}").write_text(json.dumps({"pieces": [{"path": str(p)} for p in paths]}))
    meta = atomic.read_json(ngram_build / "ngram" / NGRAM_META)
    for shard in meta["shards"]:
        s = suffix.Shard(**shard)
        assert IndexedDataset(pieced).read_tokens(s.start, s.end).tolist() == whole[s.start:s.end].tolist()
    with pytest.raises(FormatError, match="data ends"):  # past the last piece: a clear error
        IndexedDataset(pieced).read_tokens(len(whole) - 2, len(whole) + 3)
    rows = tmp_path / "suffixes.sa"
    with open(rows, "wb") as f:
        f.truncate(meta["tokens"] * 4)
    for i, shard in enumerate(meta["shards"]):
        s = suffix.Shard(**shard)
        got = index_shard(str(pieced), i, s.first_doc, s.end_doc, s.start, s.end, str(rows),
                          str(tmp_path / f"keys-{i}.npy"))
        assert got.tokens == s.end - s.start
    assert rows.read_bytes() == (ngram_build / "ngram" / "suffixes.sa").read_bytes()
    keys = np.concatenate([np.load(tmp_path / f"keys-{i}.npy") for i in range(len(meta["shards"]))])
    assert keys.tolist() == np.load(ngram_build / "ngram" / "keys.npy").tolist()


def snippets(order, tokenizer, rng, n=6) -> list[str]:
    texts = []
    for d in rng.choice(len(order.data), n, replace=False):
        text = tokenizer.decode(np.asarray(order.data[int(d)]).tolist()[:-1])
        a = int(rng.integers(0, max(1, len(text) - 30)))
        texts.append(text[a:a + int(rng.integers(4, 30))])
    return texts + [" the", "zzzz-not-in-the-corpus-zzzz", "\n"]


def test_where_text_gives_the_same_documents_with_the_index_and_the_scan(ngram_build, tokenizer):
    order = TrainingOrder(ngram_build)
    index = suffix.SuffixIndex(ngram_build, order.data)
    for text in snippets(order, tokenizer, np.random.default_rng(2)):
        if not text.strip():
            continue
        for limit in (1, 3, 50):
            scanned = docs_by_text(order, tokenizer, text, limit)
            assert docs_by_text(order, tokenizer, text, limit, index) == scanned
            assert all(text in tokenizer.decode(order.data[d].tolist()) for d in scanned)


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_where_text_command_prints_the_same_with_and_without_the_index(ngram_build, tokenizer):
    order = TrainingOrder(ngram_build)
    text = tokenizer.decode(np.asarray(order.data[3]).tolist()[5:12])
    with_index = run_cli("where", str(ngram_build), "--text", text, "--limit", "3")
    moved = ngram_build / "ngram-away"
    (ngram_build / "ngram").rename(moved)
    try:
        scanned = run_cli("where", str(ngram_build), "--text", text, "--limit", "3")
    finally:
        moved.rename(ngram_build / "ngram")
    assert with_index == scanned and with_index[0] == 0 and "training rows" in with_index[1]


def test_count_command_tables_and_plot(ngram_build, tokenizer, tmp_path):
    order = TrainingOrder(ngram_build)
    out, png = tmp_path / "c.parquet", tmp_path / "c.png"
    queries = tmp_path / "q.txt"
    queries.write_text("of\nids:0,1\n")
    code, stdout, err = run_cli("count", str(ngram_build), "--text", "the", "--ids", "13,187",
                                "--queries", str(queries), "--bins", "5", "--steps", "10:300",
                                "--output", str(out), "--plot", str(png))
    assert code == 0, err
    table = pq.read_table(out).to_pydict()
    assert len(table["query"]) == 4 * 5 and table["label"][0] == "the"
    assert table["ids"][0] == tokenizer.encode(" the").ids  # a leading space by default
    assert table["ids"][5] == [13, 187] and table["ids"][15] == [0, 1]
    index = suffix.SuffixIndex(ngram_build, order.data)
    want = Counter(order, index, 10, 300, 5).count([table["ids"][5 * i] for i in range(4)])
    assert table["samples"] == want.samples.reshape(-1).tolist()
    assert table["cumulative_samples"][:5] == np.cumsum(want.samples[0]).tolist()
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert set(table["counted_by"]) <= {"index", "stream"}
    code, _, err = run_cli("count", str(ngram_build), "--text", "the", "--ids", "13,187",
                           "--queries", str(queries), "--bins", "5", "--steps", "10:300",
                           "--output", str(out), "--strategy", "stream")
    assert code == 0, err
    streamed = pq.read_table(out).to_pydict()
    assert set(streamed["counted_by"]) == {"stream"}
    for column in ("corpus", "samples", "occurrences"):
        assert streamed[column] == table[column]
    _, stdout, _ = run_cli("count", str(ngram_build), "--text", "the", "--no-leading-space")
    assert str(tokenizer.encode("the").ids) in stdout


FIRST = ["--seq-length", "32", "--batch-size", "4", "--train-iters", "400", "--seed", "3"]


def test_memorization_export_equals_slices_of_batch_at_rows(ngram_build, tmp_path):
    order = TrainingOrder(ngram_build, ScheduleConfig(**SCHEDULES[0]))
    target = tmp_path / "mem.parquet"
    code, stdout, err = run_cli("export", str(ngram_build), "--steps", "5:40", "--format",
                                "memorization", "--prefix", "7", "--suffix", "20",
                                "--output", str(target), *FIRST)
    assert code == 0, err
    rows = pq.read_table(target).to_pylist()
    assert len(rows) == 35 * 4 and [r["step"] for r in rows] == sorted(r["step"] for r in rows)
    for r in rows:
        batch_row = order.batch(r["step"], [r["row"]])[0].tolist()
        assert r["prefix"] == batch_row[:7] and r["continuation"] == batch_row[7:27]
        for part, lo, hi in (("prefix_sources", 0, 7), ("continuation_sources", 7, 27)):
            # the sources, read back from the documents, are the part's tokens, in row order
            recs = r[part]
            assert recs[0]["row_start"] == lo and recs[-1]["row_end"] == hi
            tokens = [t for s in recs for t in order.data[s["doc"]][s["doc_start"]:s["doc_end"]].tolist()]
            assert tokens == batch_row[lo:hi]
    assert any(len(r["continuation_sources"]) > 1 for r in rows)  # a part crossing documents
    jsonl = tmp_path / "mem.jsonl"
    assert run_cli("export", str(ngram_build), "--steps", "5:6", "--format", "memorization",
                   "--prefix", "7", "--suffix", "20", "--output", str(jsonl), *FIRST)[0] == 0
    assert len(jsonl.read_text().splitlines()) == 4
    with pytest.raises(ConfigError, match="--prefix"):
        next(memorization_tables(order, 0, 1, 30, 4))


@pytest.mark.parametrize("args,named", [
    (["export", "{out}", "--steps", "1:2", "--format", "memorization", "--prefix", "0",
      "--output", "{tmp}/m.parquet"], "--prefix"),
    (["count", "{out}", "--text", "  "], "empty"),
    (["count", "{out}", "--ids", ","], "no tokens"),
    (["count", "{out}", "--ids", "1,x"], "--ids"),
    (["count", "{out}"], "give a query"),
    (["count", "{out}", "--ids", "5", "--bins", "0"], "--bins"),
    (["count", "{out}", "--ids", "5", "--steps", "0:100000"], "outside"),
    (["count", "{out}", "--ids", "5", "--output", "{tmp}/x.csv"], ".parquet"),
    (["count", "{tmp}", "--ids", "5"], "no pileprep build"),
    (["index", "{out}", "--shard-tokens", "0", "--scheduler", "synchronous"],
     "--shard-tokens must be between 1 and 1,073,741,823 for uint16 tokens"),
    (["index", "{out}", "--shard-tokens", str(1 << 30), "--scheduler", "synchronous"],
     "--shard-tokens must be between 1 and 1,073,741,823 for uint16 tokens"),
])
def test_bad_settings_are_one_line_errors(ngram_build, tmp_path, args, named):
    code, _, err = run_cli(*[a.format(out=ngram_build, tmp=tmp_path) for a in args])
    assert code == 2 and len(err.strip().splitlines()) == 1 and named in err, err
    assert "Traceback" not in err


def test_count_without_an_index_or_with_an_outdated_one_says_so(ngram_build, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ngram_build, copy, ignore=shutil.ignore_patterns("ngram"))
    code, _, err = run_cli("count", str(copy), "--ids", "5")
    assert code == 2 and "pileprep index" in err and len(err.strip().splitlines()) == 1
    shutil.copytree(ngram_build / "ngram", copy / "ngram")
    os.utime(dataset_prefix(copy, "pile").with_suffix(".bin"), ns=(1, 1))  # "another" .bin
    order = TrainingOrder(copy)
    with pytest.raises(NotFoundError, match="other data files"):
        suffix.SuffixIndex(copy, order.data)
    meta = build_index(copy, SYNC, shard_tokens=5000, quiet=True)  # indexed again
    zeros = int((np.asarray(order.data.tokens) == 0).sum())
    assert not meta["reused"] and suffix.SuffixIndex(copy, order.data).count([0]) == zeros
    assert build_index(copy, SYNC, shard_tokens=5000, quiet=True)["reused"]


@pytest.mark.slow
def test_a_killed_index_build_resumes_with_the_finished_shards(ngram_build, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ngram_build, copy, ignore=shutil.ignore_patterns("ngram"))
    cmd = [sys.executable, "-m", "pileprep.cli", "index", str(copy), "--shard-tokens", "5000",
           "--scheduler", "synchronous"]
    killed = subprocess.run(cmd, env={**os.environ, "PILEPREP_KILL_AT": "index:3"},
                            capture_output=True, text=True, start_new_session=True)
    assert killed.returncode == -signal.SIGKILL
    assert not (copy / "ngram" / NGRAM_META).exists()  # unfinished: no record
    done = run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0 and "reusing 2 of 6" in done.stderr, done.stderr
    for name in ("suffixes.sa", "keys.npy"):
        assert (copy / "ngram" / name).read_bytes() == (ngram_build / "ngram" / name).read_bytes()


def test_a_second_identical_streaming_count_is_refused_while_the_first_runs(ngram_build):
    from pileprep.core.files import COUNT_WORK
    from pileprep.jobs.count import work_dir

    order = TrainingOrder(ngram_build)
    T = order.cfg.train_iters
    with work_dir(order, COUNT_WORK, "count", [[0]], ngram.bin_edges(0, T, 1)):
        with pytest.raises(ConfigError, match="in use by"):
            count_terms(order, [[0]], 0, T, 1, "stream")
    assert count_terms(order, [[0]], 0, T, 1, "stream").samples.sum() > 0
    assert not (ngram_build / "ngram" / COUNT_WORK).exists()  # nothing left behind
