"""Pythia's real data: GPT-NeoX v1.0 index names, adopting a published dataset, provenance by
content.

The "published" dataset is made here as EleutherAI made theirs, by independent code
(tests/megatron_ref.py): a deduplicated, reordered subset of generated raw documents, tokenized
with the tokenizers library + EOD, cut into ``NAME-00000-of-000NN.bin`` pieces with a hash list.
Its index maps come from tests/schedule_ref.py under GPT-NeoX v1.0's names
(tests/neox_v1_ref.py). pileprep then has to recover everything from the files alone.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

import megatron_ref
import neox_v1_ref
import schedule_ref
from helpers import API_SCHEDULE, shard_files
from pileprep.jobs.adopt import adopt
from pileprep.jobs.align import align
from pileprep.cli.main import main
from pileprep.core.config import BuildConfig, ScheduleConfig, with_settings
from pileprep.core.errors import FormatError, InputError, IntegrityError
from pileprep.outputs.pieces import join, split
from pileprep.checks.verify import verify
from pileprep.training import schedule_files
from pileprep.training.order import TrainingOrder

STEM = "pile_test_deduped_text_document"
PIECE_BYTES = 60_000
L, B, T, SEED = 64, 4, 150, 1234


# -- GPT-NeoX v1.0's names -------------------------------------------------------------------

def test_built_schedules_load_under_gpt_neox_v1_names_without_a_copy(scheduled_build):
    c = API_SCHEDULE
    prefix = str(scheduled_build / "pile_text_document")
    loaded = neox_v1_ref.load_if_present(prefix, c["train_iters"], c["batch_size"],
                                         c["seq_length"], c["seed"])
    assert loaded is not None, "GPT-NeoX v1.0 would rebuild the index"
    cfg = ScheduleConfig(**c)
    ours = schedule_files.paths(prefix, cfg)
    v1 = neox_v1_ref.index_files(prefix, c["train_iters"], c["batch_size"], c["seq_length"], c["seed"])
    for kind, arr in zip(("doc", "sample", "shuffle"), loaded):
        assert os.path.samefile(v1[kind], ours[kind])  # one copy of the bytes
        assert np.array_equal(arr, np.load(ours[kind]))
    assert "_packedpi_ac_" in ours["doc"].name and "_packedpi_ac_" not in v1["doc"]


def test_pythia_file_names_under_both_conventions():
    pythia = ScheduleConfig()  # seq 2048, batch 1024, 143000 iters, seed 1234
    v1 = schedule_files.paths("d/pile_20B_tokenizer_text_document", pythia, "v1.0")
    assert v1["doc"].name == "pile_20B_tokenizer_text_document_train_0_indexmap_147164160ns_2048sl_1234s_doc_idx.npy"
    assert str(v1["doc"]) == neox_v1_ref.index_files("d/pile_20B_tokenizer_text_document",
                                                     143000, 1024, 2048, 1234)["doc"]


def test_a_schedule_found_only_under_v1_names_is_used(scheduled_build, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(scheduled_build, out, symlinks=True)
    cfg = ScheduleConfig(**API_SCHEDULE)
    prefix = out / "pile_text_document"
    want = TrainingOrder(out, cfg).batch(3)
    for p in schedule_files.paths(prefix, cfg).values():
        p.unlink()
    assert (TrainingOrder(out, cfg).batch(3) == want).all()


def test_shard_keeps_one_copy_of_linked_schedules(scheduled_build, tmp_path):
    desc = split(scheduled_build, tmp_path / "pieces", 1 << 20)
    links = {n: f["link_to"] for n, f in desc["files"].items() if "link_to" in f}
    assert len(links) == 3  # one name of each schedule file is a link, not a second copy
    assert all(("_packedpi_ac_" in a) != ("_packedpi_ac_" in b) for a, b in links.items())
    join(tmp_path / "pieces", tmp_path / "back")
    assert not verify(tmp_path / "back").problems


# -- a published dataset -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def published(clean_corpus, tokenizer, tmp_path_factory):
    """The published files, and the truth: for each published document, the raw (source, line)
    documents with exactly its ids."""
    root = tmp_path_factory.mktemp("published")
    raw = {}  # ids -> [(source, line)]
    for path in shard_files(clean_corpus):
        for line, obj in megatron_ref.iter_shard_texts(path):
            if isinstance(obj, dict) and isinstance(obj.get("text"), str) and obj["text"]:
                ids = tuple(tokenizer.encode(obj["text"]).ids + [0])
                raw.setdefault(ids, []).append((path.name, line))
    unique = sorted(raw)  # deduplicated: one copy of each distinct document
    rng = random.Random(7)
    kept = [d for d in unique if rng.random() > 0.1]  # a subset...
    rng.shuffle(kept)  # ...not in raw order
    megatron_ref.write_documents(root / "whole", [list(d) for d in kept])
    pieces = root / "pieces"
    pieces.mkdir()
    data = (root / "whole.bin").read_bytes()
    n = -(-len(data) // PIECE_BYTES)
    for i in range(n):  # EleutherAI's naming: -of- the last piece's number
        (pieces / f"{STEM}-{i:05d}-of-{n - 1:05d}.bin").write_bytes(data[i * PIECE_BYTES:(i + 1) * PIECE_BYTES])
    shutil.copy(root / "whole.idx", pieces / f"{STEM}.idx")
    (root / "sha256.txt").write_text("".join(
        f"{p.name} {hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in sorted(pieces.iterdir())))
    maps = root / "maps"
    maps.mkdir()
    sizes = [len(d) for d in kept]
    _, _, doc_idx, sample_idx, shuffle_idx = schedule_ref.reference_schedule(sizes, L, B, T, SEED)
    files = neox_v1_ref.index_files(str(maps / STEM), T, B, L, SEED)
    for kind, arr in zip(("doc", "sample", "shuffle"), (doc_idx, sample_idx, shuffle_idx)):
        np.save(files[kind], arr)
    truth = [sorted(raw[d]) for d in kept]
    return {"root": root, "pieces": pieces, "hashes": root / "sha256.txt", "maps": maps,
            "docs": [list(d) for d in kept], "truth": truth, "n_pieces": n,
            "schedule": (doc_idx, sample_idx, shuffle_idx)}


def _align_cfg(inputs, tokenizer_spec) -> BuildConfig:
    cfg = BuildConfig()
    cfg = with_settings(cfg, {"read.inputs": [str(i) for i in inputs],
                              "tokenize.tokenizer": tokenizer_spec,
                              "cluster.scheduler": "synchronous", "quiet": True, "schedule": None,
                              "read.partition_bytes": 400_000})
    return cfg


@pytest.fixture(scope="module")
def adopted(published, clean_corpus, tokenizer_spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("adopted")
    adopt(published["pieces"], out, hashes=published["hashes"], index_maps=published["maps"],
          batch_size=B, quiet=True)
    summary = align(out, _align_cfg([clean_corpus], tokenizer_spec))
    return out, summary


def test_adopted_pieces_are_read_in_place_and_verify(published, adopted):
    out, _ = adopted
    assert published["n_pieces"] > 3
    assert not list(out.glob("*.bin"))  # no copy of the tokens
    assert (out / "pile_test_deduped_text_document.bin.pieces.json").exists()
    v = verify(out)
    assert not v.problems, v.problems
    import pileprep

    build = pileprep.open(out)
    assert len(build) == len(published["docs"])
    for i in range(0, len(build), 5):  # documents straddling piece boundaries included
        assert build[i].tolist() == published["docs"][i]


def test_every_document_recovered_by_content(published, adopted):
    import pyarrow.parquet as pq

    out, summary = adopted
    prov = pq.read_table(out / "provenance.parquet").to_pylist()
    assert len(prov) == len(published["truth"])
    for row, truth in zip(prov, published["truth"]):
        assert (row["source"], row["line"]) == truth[0]  # the first in (source, line) order
        assert row["candidates"] == len(truth)
        assert row["match"] == ("exact" if len(truth) == 1 else "ambiguous")
    ambiguous = sum(len(t) > 1 for t in published["truth"])
    assert ambiguous > 0, "the corpus plants exact copies: some documents must be ambiguous"
    assert summary["documents"] == {"exact": len(prov) - ambiguous, "ambiguous": ambiguous, "none": 0}
    # Raw documents left out of the published subset are counted, not matched.
    assert summary["raw_matched"] == sum(len(t) for t in published["truth"]) < summary["raw_documents"]


def test_batch_at_sources_equal_the_ground_truth(published, adopted):
    out, _ = adopted
    order = TrainingOrder(out)  # the adopted index map is the build's schedule
    assert (order.cfg.seq_length, order.cfg.batch_size, order.cfg.train_iters) == (L, B, T)
    doc_idx, sample_idx, shuffle_idx = published["schedule"]
    for step in (0, 7, T - 1):
        batch = order.batch(step)
        for row, sources in enumerate(order.sources(step)):
            n = step * B + row
            want = schedule_ref.reference_sample(published["docs"], doc_idx, sample_idx, shuffle_idx, n, L)
            assert batch[row].tolist() == want
            for rec in sources:
                assert (rec["source"], rec["line"]) == published["truth"][rec["doc"]][0]
                assert batch[row][rec["row_start"]:rec["row_end"]].tolist() == \
                    published["docs"][rec["doc"]][rec["doc_start"]:rec["doc_end"]]


def test_realigning_the_same_inputs_changes_nothing(adopted, clean_corpus, tokenizer_spec):
    out, first = adopted
    before = (out / "provenance.parquet").read_bytes()
    again = align(out, _align_cfg([clean_corpus], tokenizer_spec))
    assert again["documents"] == first["documents"]
    assert (out / "provenance.parquet").read_bytes() == before


def test_without_raw_text_sources_are_unknown_and_commands_say_so(published, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["adopt", str(published["pieces"]), "-o", str(out), "--index-maps",
                 str(published["maps"]), "--batch-size", str(B), "-q"]) == 0
    assert main(["batch-at", str(out), "--step", "3"]) == 0
    text = capsys.readouterr().out
    assert "(source unknown)" in text
    assert main(["verify", str(out)]) == 0


def test_a_flipped_byte_names_the_piece_and_writes_nothing(published, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(published["pieces"], bad)
    victim = sorted(bad.glob("*.bin"))[2]
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=victim.name):
        adopt(bad, tmp_path / "out", hashes=published["hashes"], quiet=True)
    assert not (tmp_path / "out").exists()


def test_missing_piece_and_foreign_hash_lists_are_named(published, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(published["pieces"], bad)
    sorted(bad.glob("*.bin"))[1].unlink()
    with pytest.raises(InputError, match="missing piece.*00001"):
        adopt(bad, tmp_path / "out", quiet=True)
    hashes = tmp_path / "h.txt"
    hashes.write_text(published["hashes"].read_text() + f"other.bin {'0' * 64}\n")
    with pytest.raises(InputError, match="other.bin"):
        adopt(published["pieces"], tmp_path / "out2", hashes=hashes, quiet=True)


def test_an_index_that_does_not_match_the_data_is_refused(published, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(published["pieces"], bad)
    last = sorted(bad.glob("*.bin"))[-1]
    last.write_bytes(last.read_bytes()[:-2])
    with pytest.raises(IntegrityError, match="do not belong together"):
        adopt(bad, tmp_path / "out", quiet=True)


def test_an_index_map_for_another_dataset_is_refused(published, tmp_path):
    other = tmp_path / "maps"
    other.mkdir()
    sizes = [len(d) for d in published["docs"][:-5]]  # five documents fewer
    arrays = schedule_ref.reference_schedule(sizes, L, B, T, SEED)[2:]
    for kind, arr in zip(("doc", "sample", "shuffle"),
                         arrays):
        np.save(neox_v1_ref.index_files(str(other / STEM), T, B, L, SEED)[kind], arr)
    with pytest.raises(FormatError, match="made for another dataset"):
        adopt(published["pieces"], tmp_path / "out", index_maps=other, batch_size=B, quiet=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_raw_text_in_another_tokenizers_ids_matches_nothing(published, clean_corpus, tokenizer_spec,
                                                             tmp_path, capsys):
    import json

    spec = json.loads(Path(tokenizer_spec).read_text())
    vocab = spec["model"]["vocab"]
    for token, i in vocab.items():  # another tokenizer's ids: the same words, renumbered
        if 1000 <= i < 50000:
            vocab[token] = 50999 - i
    other = tmp_path / "other_tokenizer.json"
    other.write_text(json.dumps(spec))
    out = tmp_path / "o"
    assert main(["adopt", str(published["pieces"]), "-o", str(out), "-q", "--input",
                 str(clean_corpus), "--tokenizer", str(other), "--scheduler", "synchronous"]) == 0
    text = capsys.readouterr().out
    assert "is the raw text tokenized with the dataset's tokenizer" in text
    import json as _json

    report = _json.loads((out / "report.json").read_text())
    assert "tokenized with the dataset's tokenizer" in report["alignment"]["warning"]


def test_where_seen_and_export_work_on_the_adopted_dataset(published, adopted, tmp_path, capsys):
    out, _ = adopted
    source, line = published["truth"][5][0]
    assert main(["where", str(out), "--doc", f"{source}:{line}"]) == 0
    assert f"{source}:{line} (doc 5," in capsys.readouterr().out
    assert main(["seen", str(out), "--steps", "0:20", "--output", str(tmp_path / "seen.csv")]) == 0
    assert main(["export", str(out), "--steps", "3:4", "--format", "jsonl",
                 "--output", str(tmp_path / "e.jsonl")]) == 0
    rows = (tmp_path / "e.jsonl").read_text().splitlines()
    assert len(rows) == B


def test_exposures_on_the_adopted_dataset(published, adopted, tmp_path, capsys):
    import pyarrow.parquet as pq

    out, _ = adopted
    target = tmp_path / "exposures.parquet"
    assert main(["exposures", str(out), "--output", str(target), "-q"]) == 0
    text = capsys.readouterr().out
    assert "total" in text and "Pile-CC" in text  # per subset: provenance was recovered
    t = pq.read_table(target)
    assert t.num_rows == len(published["docs"])
    assert sum(t.column("tokens_seen").to_pylist()) == T * B * (L + 1)
    assert main(["exposures", str(out), "--until-step", str(T + 1)]) == 2


def test_inputs_added_over_time_equal_all_at_once(published, adopted, clean_corpus, tokenizer_spec,
                                                  tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "o"
    adopt(published["pieces"], out, quiet=True)
    first, *rest = shard_files(clean_corpus)
    align(out, _align_cfg([first], tokenizer_spec))
    align(out, _align_cfg([first, *rest], tokenizer_spec))  # the first one again, and the others
    keys = ["source", "line", "match", "candidates"]
    assert pq.read_table(out / "provenance.parquet", columns=keys) == \
        pq.read_table(adopted[0] / "provenance.parquet", columns=keys)


def test_overwrite_leaves_nothing_of_the_previous_dataset(published, tmp_path):
    out = tmp_path / "o"
    adopt(published["root"] / "whole", out, name="first", quiet=True)
    adopt(published["pieces"], out, overwrite=True, quiet=True)
    assert not list(out.glob("first*"))
    import pileprep

    assert pileprep.open(out)[0].tolist() == published["docs"][0]
    assert not verify(out).problems


def test_bad_names_pieces_and_maps_are_one_line_errors(published, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(published["pieces"], bad)
    sorted(bad.glob("*.bin"))[-1].unlink()  # the last piece, which -of- names
    assert main(["adopt", str(bad), "-o", str(tmp_path / "o1"), "-q"]) == 2
    assert f"missing piece {published['n_pieces'] - 1:05d}" in capsys.readouterr().err
    assert main(["adopt", str(published["pieces"]), "-o", str(tmp_path / "o2"), "--name", "../x"]) == 2
    maps = tmp_path / "maps"
    shutil.copytree(published["maps"], maps)
    victim = sorted(maps.iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:100])  # an interrupted download
    assert main(["adopt", str(published["pieces"]), "-o", str(tmp_path / "o3"), "--index-maps",
                 str(maps), "--batch-size", str(B)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("Traceback" not in e for e in err)


def test_shard_refuses_a_dataset_read_in_place(published, tmp_path, capsys):
    out = tmp_path / "o"
    adopt(published["pieces"], out, quiet=True)
    assert main(["shard", str(out), "--max-size", "1MB", "-o", str(tmp_path / "p")]) == 2
    assert "in place" in capsys.readouterr().err


@pytest.mark.slow
def test_alignment_bytes_do_not_depend_on_workers(published, adopted, clean_corpus, tokenizer_spec,
                                                  tmp_path):
    out = tmp_path / "o"
    adopt(published["pieces"], out, quiet=True)
    cfg = _align_cfg([clean_corpus], tokenizer_spec)
    cfg = with_settings(cfg, {"cluster.scheduler": None, "cluster.workers": 2,
                              "read.partition_bytes": 150_000})
    align(out, cfg)
    assert (out / "provenance.parquet").read_bytes() == (adopted[0] / "provenance.parquet").read_bytes()
