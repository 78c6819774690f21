"""Pythia's preshuffled datasets: items that are the training samples, in training order.

The preshuffled dataset is made here as EleutherAI made theirs, by independent code: every
training sample of the published idxmaps dataset (tests/schedule_ref.py walking the document
stream) written as one MMIDIDX item (tests/megatron_ref.py), cut into Pythia's
``document-00000-of-000NN.bin`` pieces with a hash list. pileprep adopts it, proves it equal to
the adopted idxmaps dataset's schedule, and answers with documents and sources through it.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

import megatron_ref
import schedule_ref
from test_pythia import B, L, T, adopted, published  # noqa: F401 - the fixtures are shared
from pileprep.checks.verify import verify
from pileprep.cli.main import main
from pileprep.core.config import ClusterConfig, ScheduleConfig
from pileprep.core.errors import ConfigError, FormatError
from pileprep.jobs import compare as compare_job
from pileprep.jobs.adopt import adopt
from pileprep.training.order import TrainingOrder

SYNC = ClusterConfig(scheduler="synchronous")
PIECE_BYTES = 20_000


def _samples(published) -> list[list[int]]:
    doc_idx, sample_idx, shuffle_idx = published["schedule"]
    return [schedule_ref.reference_sample(published["docs"], doc_idx, sample_idx, shuffle_idx, n, L)
            for n in range(T * B)]


def _publish(root, items: list[list[int]]):
    """``items`` as Pythia publishes a preshuffled dataset: document.idx and the pieces of
    document.bin, named -of- the last piece's number, with a hash list."""
    whole = root / "whole"
    whole.mkdir(parents=True)
    megatron_ref.write_documents(whole / "document", items)
    pieces = root / "pieces"
    pieces.mkdir()
    data = (whole / "document.bin").read_bytes()
    n = -(-len(data) // PIECE_BYTES)
    for i in range(n):
        (pieces / f"document-{i:05d}-of-{n - 1:05d}.bin").write_bytes(
            data[i * PIECE_BYTES:(i + 1) * PIECE_BYTES])
    shutil.copy(whole / "document.idx", pieces / "document.idx")
    (root / "sha256.txt").write_text("".join(
        f"{p.name} {hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in sorted(pieces.iterdir())))
    return pieces, root / "sha256.txt", whole / "document"


@pytest.fixture(scope="module")
def preshuffled(published, tmp_path_factory):
    items = _samples(published)
    pieces, hashes, prefix = _publish(tmp_path_factory.mktemp("preshuffled-published"), items)
    out = tmp_path_factory.mktemp("preshuffled")
    rep = adopt(pieces, out, hashes=hashes, batch_size=B, quiet=True, overwrite=True)
    return {"out": out, "items": items, "report": rep, "prefix": prefix, "pieces": pieces}


@pytest.fixture(scope="module")
def linked(preshuffled, adopted, monkeypatch_module):
    monkeypatch_module.setattr(compare_job, "ITEMS_PER_TASK", 128)  # several tasks...
    monkeypatch_module.setattr(compare_job, "CHUNK_ITEMS", 50)  # ...of several chunks
    result = compare_job.compare(preshuffled["out"], adopted[0], SYNC, quiet=True)
    return result


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_a_preshuffled_dataset_is_recognised_and_read_in_place(preshuffled):
    rep = preshuffled["report"]
    assert rep["preshuffled"] == {"seq_length": L, "batch_size": B, "items": T * B}
    assert rep["schedules"] == []  # no index maps are built for it
    assert not list(preshuffled["out"].glob("*.bin"))
    assert verify(preshuffled["out"]).problems == []


def test_batches_are_the_items_of_their_step_as_pythias_batch_viewer_reads_them(preshuffled):
    order = TrainingOrder(preshuffled["out"])
    assert (order.cfg.seq_length, order.cfg.batch_size, order.cfg.train_iters) == (L, B, T)
    viewer = megatron_ref.read_documents(preshuffled["prefix"])  # utils/batch_viewer.py's slicing
    for step in (0, 3, T - 1):
        batch = order.batch(step)
        assert batch.tolist() == [list(viewer[i]) for i in range(step * B, step * B + B)]
        assert batch.tolist() == preshuffled["items"][step * B:(step + 1) * B]


def test_the_order_is_proven_equal_and_linked(linked, preshuffled):
    assert linked["equal"] and linked["items"] == T * B and linked["first_difference"] is None
    assert (preshuffled["out"] / "order_link.json").exists()
    assert verify(preshuffled["out"]).problems == []  # the link is in the manifest


def test_every_item_has_its_documents_and_sources(linked, preshuffled, published, adopted):
    order = TrainingOrder(preshuffled["out"])
    idxmaps = TrainingOrder(adopted[0])
    for step in range(T):
        batch = order.batch(step)
        sources = order.sources(step)
        assert sources == idxmaps.sources(step)
        for row, recs in enumerate(sources):
            assert sum(r["row_end"] - r["row_start"] for r in recs) == L + 1
            for r in recs:  # first and last pieces are a suffix and a prefix of documents
                assert batch[row][r["row_start"]:r["row_end"]].tolist() == \
                    published["docs"][r["doc"]][r["doc_start"]:r["doc_end"]]
                assert (r["source"], r["line"]) == published["truth"][r["doc"]][0]


def test_memorization_sets_slice_as_pythias_evaluation(linked, preshuffled, tmp_path):
    out = tmp_path / "mem.parquet"
    assert main(["export", str(preshuffled["out"]), "--steps", "2:5", "--format", "memorization",
                 "--output", str(out)]) == 0
    rows = pq.read_table(out).to_pylist()
    items = preshuffled["items"]
    assert [r["sample"] for r in rows] == list(range(2 * B, 5 * B))
    for r in rows:  # eval_memorization.py: tokens[:32] the prompt, [32:64] the truth
        assert r["prefix"] == items[r["sample"]][:32]
        assert r["continuation"] == items[r["sample"]][32:64]
        assert all(s["source"] is not None for s in r["prefix_sources"] + r["continuation_sources"])


def test_seen_and_sequences_on_the_linked_dataset(linked, preshuffled, tmp_path, capsys):
    assert main(["seen", str(preshuffled["out"]), "--steps", "0:10"]) == 0
    assert "documents" in capsys.readouterr().out
    prefix = tmp_path / "seq"
    assert main(["sequences", str(preshuffled["out"]), "--steps", "0:10", "-o", str(prefix)]) == 0
    got = megatron_ref.read_documents(prefix)
    assert [list(x) for x in got] == preshuffled["items"][:10 * B]


def test_a_swapped_item_is_named_and_not_linked(published, adopted, tmp_path):
    items = _samples(published)
    items[2 * B + 1], items[5 * B + 2] = items[5 * B + 2], items[2 * B + 1]
    pieces, hashes, _ = _publish(tmp_path / "pub", items)
    out = tmp_path / "out"
    adopt(pieces, out, hashes=hashes, batch_size=B, quiet=True)
    r = compare_job.compare(out, adopted[0], SYNC, quiet=True)
    assert not r["equal"]
    token = next(i for i, (a, b) in enumerate(zip(items[2 * B + 1], _samples(published)[2 * B + 1]))
                 if a != b)
    assert r["first_difference"] == {"item": 2 * B + 1, "token": token}
    assert not (out / "order_link.json").exists()
    assert main(["compare", str(out), str(adopted[0]), "--scheduler", "synchronous"]) == 1


def test_without_a_link_items_are_their_own_documents_and_exposures_say_why_not(
        preshuffled, tmp_path, capsys):
    out = tmp_path / "unlinked"
    adopt(preshuffled["pieces"], out, batch_size=B, quiet=True)
    order = TrainingOrder(out)
    (recs,) = order.sources(4, [1])
    assert recs == [{"doc": 4 * B + 1, "source": None, "line": None, "pile_set_name": "",
                     "doc_start": 0, "doc_end": L + 1, "row_start": 0, "row_end": L + 1}]
    assert main(["exposures", str(out)]) == 2  # documents' exposure needs the documents
    assert "link this preshuffled dataset" in capsys.readouterr().err


def test_items_of_another_length_are_refused(published, tmp_path):
    items = _samples(published)[:40]
    items[17] = items[17][:-1]
    pieces, _, _ = _publish(tmp_path / "pub", items)
    with pytest.raises(FormatError, match=r"item 17 has 64 tokens"):
        adopt(pieces, tmp_path / "out", batch_size=B, preshuffled=True, seq_length=L, quiet=True)
    # the same items under a name that is not Pythia's are documents, unless said otherwise
    good, _, _ = _publish(tmp_path / "pub2", _samples(published)[:40])
    renamed = preshuffled_copy(good, tmp_path)
    assert "preshuffled" not in adopt(renamed, tmp_path / "docs", batch_size=B, quiet=True)
    forced = adopt(renamed, tmp_path / "forced", batch_size=B, quiet=True, preshuffled=True,
                   seq_length=L)
    assert forced["preshuffled"]["items"] == 40


def preshuffled_copy(pieces, tmp_path):
    """The same pieces under a name that is not Pythia's ``document``."""
    d = tmp_path / "renamed"
    d.mkdir()
    for f in pieces.iterdir():
        shutil.copy(f, d / f.name.replace("document", "samples"))
    return d


def test_a_damaged_shuffle_map_is_refused_naming_the_file(published, tmp_path):
    maps = tmp_path / "maps"
    shutil.copytree(published["maps"], maps)
    shuffle = next(maps.glob("*_shuffle_idx.npy"))
    arr = np.load(shuffle)
    arr[: int(len(arr) * 0.92)] = 0  # as pile-preshuffled-seeds' seed-2 map (pythia#190)
    np.save(shuffle, arr)
    with pytest.raises(FormatError, match=rf"{shuffle.name}.*not a permutation"):
        adopt(published["pieces"], tmp_path / "out", hashes=published["hashes"],
              index_maps=maps, batch_size=B, quiet=True)
    assert not (tmp_path / "out").exists()


def test_pythias_checkpoints_and_the_v0_rule():
    from pileprep.training.checkpoints import CHECKPOINTS, steps_until, v0_steps

    names = [f"step{n}" for n in CHECKPOINTS]
    assert len(names) == 154 and names[:11] == ["step0", "step1", "step2", "step4", "step8",
                                                "step16", "step32", "step64", "step128",
                                                "step256", "step512"]
    assert names[11:13] == ["step1000", "step2000"] and names[-1] == "step143000"
    assert steps_until("step3000") == (0, 3000) and steps_until("4") == (0, 4)
    assert v0_steps(0) == (0, 2) and v0_steps(35750) == (71500, 71502)
    for bad, said in [("step1500", "nearest: step1000 or step2000"), ("step0", "seen no data"),
                      ("3k", "stepN")]:
        with pytest.raises(ConfigError, match=said):
            steps_until(bad)


def test_checkpoint_and_v0_flags_pick_their_steps(linked, preshuffled, tmp_path, capsys,
                                                   monkeypatch):
    from pileprep.training import checkpoints

    assert main(["seen", str(preshuffled["out"]), "--checkpoint", "step64"]) == 2
    assert "Pythia's steps of 1024 samples" in capsys.readouterr().err  # these are 4 a step
    monkeypatch.setattr(checkpoints, "PYTHIA_BATCH", B)  # Pythia's rule, at this small scale
    items = preshuffled["items"]
    out = tmp_path / "v0.npy"
    assert main(["batch-at", str(preshuffled["out"]), "--v0-step", "3", "-o", str(out)]) == 0
    assert np.load(out).tolist() == items[6 * B:8 * B]  # v0 step 3: steps 6 and 7
    assert main(["batch-at", str(preshuffled["out"]), "--checkpoint", "step8", "-o", str(out)]) == 0
    assert np.load(out).tolist() == items[7 * B:8 * B]  # the last batch before step8
    capsys.readouterr()
    assert main(["seen", str(preshuffled["out"]), "--checkpoint", "step64"]) == 0
    assert capsys.readouterr().out.startswith("steps 0..63:")


def test_a_link_holds_only_for_the_data_it_was_proven_on(preshuffled, adopted, tmp_path):
    import os

    from pileprep.core.errors import IntegrityError

    other = tmp_path / "idxmaps"
    shutil.copytree(adopted[0], other, symlinks=True)
    out = tmp_path / "pre"
    adopt(preshuffled["pieces"], out, batch_size=B, quiet=True)
    assert compare_job.compare(out, other, SYNC, quiet=True)["equal"]
    assert TrainingOrder(out).sources(1)[0][0]["source"] is not None
    halves = TrainingOrder(out, ScheduleConfig(seq_length=L, batch_size=B // 2, train_iters=10))
    with pytest.raises(ConfigError, match="linked schedule's batches are 4"):
        halves.sources(0)
    idx = next(other.glob("*.idx"))
    os.utime(idx, ns=(idx.stat().st_atime_ns, idx.stat().st_mtime_ns + 10**9))  # rebuilt
    with pytest.raises(IntegrityError, match="changed since it was compared"):
        TrainingOrder(out).sources(1)
    # adopted anew over it: the old link goes with the old dataset
    adopt(preshuffled["pieces"], out, batch_size=B, quiet=True, overwrite=True)
    assert not (out / "order_link.json").exists()
    assert TrainingOrder(out).sources(1)[0][0]["source"] is None
    assert verify(out).problems == []


def test_terms_are_counted_over_the_items_themselves(preshuffled, tmp_path):
    """Unlinked: an occurrence inside item n is one in training sample n; brute force agrees."""
    from pileprep.jobs.index import build_index
    from pileprep.jobs.count import count_terms

    out = tmp_path / "unlinked"
    adopt(preshuffled["pieces"], out, batch_size=B, quiet=True)
    build_index(out, SYNC, shard_tokens=5000, quiet=True)
    items = preshuffled["items"]
    common = max(set(items[0]), key=items[0].count)
    queries = [[common], items[9][10:13], items[100][0:2], [50_000, 50_001]]
    first, end = 3, 120
    c = count_terms(TrainingOrder(out), queries, first, end, bins=4, strategy="index")
    by_pass = count_terms(TrainingOrder(out), queries, first, end, bins=4, strategy="stream")
    for name in ("corpus", "samples", "occurrences", "first"):  # both ways count the same
        assert getattr(by_pass, name).tolist() == getattr(c, name).tolist()
    whole = [count_terms(TrainingOrder(out), queries, 0, T, 3, strategy=s) for s in ("index", "stream")]
    assert len(items) <= T * B  # the pass reads every item: its total is the corpus column
    for name in ("corpus", "samples", "occurrences", "first"):
        assert getattr(whole[0], name).tolist() == getattr(whole[1], name).tolist()
    for qi, q in enumerate(queries):
        m = len(q)
        hits = [(n, sum(items[n][o:o + m] == q for o in range(L + 2 - m)))
                for n in range(len(items))]
        assert c.corpus[qi] == sum(h for _, h in hits)
        for b, (a, z) in enumerate(zip(c.edges[:-1], c.edges[1:])):
            trained = [h for n, h in hits if a * B <= n < z * B]
            assert c.samples[qi, b] == sum(h > 0 for h in trained)
            assert c.occurrences[qi, b] == sum(trained)


def test_counts_between_pythias_checkpoints(preshuffled, tmp_path, monkeypatch, capsys):
    from pileprep.jobs.index import build_index
    from pileprep.training import checkpoints
    from pileprep.jobs.count import count_terms

    assert checkpoints.checkpoint_edges(1024, 0, 143_000) == checkpoints.CHECKPOINTS
    with pytest.raises(ConfigError, match="steps of 1024 samples"):
        checkpoints.checkpoint_edges(B, 0, T)
    monkeypatch.setattr(checkpoints, "PYTHIA_BATCH", B)  # Pythia's edges, at this small scale
    edges = checkpoints.checkpoint_edges(B, 0, T)
    assert edges == [0, 1, 2, 4, 8, 16, 32, 64, 128, T]
    out = tmp_path / "unlinked"
    adopt(preshuffled["pieces"], out, batch_size=B, quiet=True)
    build_index(out, SYNC, shard_tokens=5000, quiet=True)
    order = TrainingOrder(out)
    q = [preshuffled["items"][0][5:7]]
    by_checkpoint = count_terms(order, q, 0, T, edges)
    whole = count_terms(order, q, 0, T, 1)
    assert by_checkpoint.edges == edges
    assert by_checkpoint.samples.sum() == whole.samples.sum() > 0
    assert main(["count", str(out), "--ids", ",".join(map(str, q[0])), "--bins", "checkpoints"]) == 0
    assert "steps     128..149" in capsys.readouterr().out  # the last bin: step128 to the end


def test_items_get_their_sources_by_content_without_the_index_maps(tokenizer, tokenizer_spec,
                                                                   tmp_path, monkeypatch):
    """Raw text alone: whole pieces, and the tail and head pieces at an item's edges, are found
    by content; each named source really holds the piece where it says; only pieces that
    cannot be keyed (shorter than W at an edge, or an item without EOD) stay unknown.
    Items of 1,025 tokens: most hold several documents and two edges."""
    from test_pythia import _align_cfg

    from pileprep.jobs import align_items
    from pileprep.jobs.align import align
    from pileprep.jobs.align_items import W
    from pileprep.sources.synth import SynthConfig, generate

    monkeypatch.setattr(align_items, "ITEMS_PER_TASK", 50)  # several ranges of items...
    monkeypatch.setattr(align_items, "BUCKET_ROWS", 500)  # ...and several join buckets

    corpus = tmp_path / "raw"
    generate(SynthConfig(corpus, shards=2, megabytes=0.15, seed=9, max_doc_words=60))
    raw = {}  # (source, line) -> ids + EOD, as the dataset was tokenized
    for path in sorted(corpus.glob("*.jsonl.zst")):
        for line, obj in megatron_ref.iter_shard_texts(path):
            if isinstance(obj, dict) and isinstance(obj.get("text"), str) and obj["text"]:
                raw[(path.name, line)] = tokenizer.encode(obj["text"]).ids + [0]
    docs = sorted({tuple(v) for v in raw.values()})  # deduplicated, in another order
    width, batch, steps = 1025, 4, 30
    _, _, doc_idx, sample_idx, shuffle_idx = schedule_ref.reference_schedule(
        [len(d) for d in docs], width - 1, batch, steps, 1234)
    items = [schedule_ref.reference_sample([list(d) for d in docs], doc_idx, sample_idx,
                                           shuffle_idx, n, width - 1) for n in range(steps * batch)]
    pieces, _, _ = _publish(tmp_path / "pub", items)
    out = tmp_path / "pre"
    adopt(pieces, out, batch_size=batch, quiet=True)
    summary = align(out, _align_cfg([corpus], tokenizer_spec))
    order = TrainingOrder(out)
    found = unknown = 0
    for step in range(steps):
        for row, recs in enumerate(order.sources(step)):
            item = items[step * batch + row]
            assert recs[0]["row_start"] == 0 and recs[-1]["row_end"] == width
            for r in recs:
                piece = item[r["row_start"]:r["row_end"]]
                if r["source"] is None:
                    unknown += len(piece)
                    edge = r["row_start"] == 0 or r["row_end"] == width
                    assert edge and (len(piece) < W or 0 not in item), r
                    continue
                found += len(piece)
                assert raw[(r["source"], r["line"])][r["doc_start"]:r["doc_end"]] == piece
    assert found > 0.7 * (found + unknown)  # the rest: inside long documents, or short edges
    assert summary["tokens"]["exact"] + summary["tokens"]["ambiguous"] == found
    assert summary["pieces"]["none_whole"] == summary["pieces"]["none_tail"] == \
        summary["pieces"]["none_head"] == 0  # every keyed piece came from the raw text
    # what users read: a memorization set (pieces of unknown source clipped too) and batch-at
    mem = tmp_path / "mem.jsonl"
    assert main(["export", str(out), "--steps", "0:5", "--format", "memorization", "-o", str(mem)]) == 0
    for row in map(json.loads, mem.read_text().splitlines()):
        for rec in row["prefix_sources"] + row["continuation_sources"]:
            if rec["source"] is not None:
                assert raw[(rec["source"], rec["line"])][rec["doc_start"]:rec["doc_end"]] == \
                    items[row["sample"]][rec["row_start"]:rec["row_end"]]
            else:
                assert rec["doc_start"] is None
    assert main(["batch-at", str(out), "--step", "2"]) == 0


def test_align_on_a_preshuffled_dataset_from_the_command_line(preshuffled, clean_corpus,
                                                              tmp_path, capsys):
    out = tmp_path / "pre"
    adopt(preshuffled["pieces"], out, batch_size=B, quiet=True)
    assert main(["align", str(out), "--input", str(clean_corpus), "--scheduler", "synchronous",
                 "-q"]) == 0
    said = capsys.readouterr().out
    assert "exact" in said and "none inside" in said and "pieces" in said
    assert verify(out).problems == []  # the item sources are in the manifest
