"""End-to-end builds: exact tokens, order, provenance, accounting, determinism, resume."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import megatron_ref
from helpers import BAD_LINES, BAD_REASONS, make_config, shard_files
from pileprep.core.config import with_settings
from pileprep.formats import indexed, provenance
from pileprep.core.errors import ConfigError

from pileprep.stages import graph as stage_graph
from pileprep.jobs.build import build

OUTPUTS = ["pile_text_document.bin", "pile_text_document.idx", "provenance.parquet",
           "rejects.jsonl", "manifest.json"]


def _texts_by_position(corpus):
    """(source, line) -> (text, subset) for every valid record, read independently."""
    out = {}
    for path in shard_files(corpus):
        for line, obj in megatron_ref.iter_shard_texts(path):
            if isinstance(obj, dict) and isinstance(obj.get("text"), str) and obj["text"]:
                try:
                    obj["text"].encode("utf-8")
                except UnicodeEncodeError:
                    continue  # a lone surrogate: no tokenizer can take it, so it is rejected
                meta = obj.get("meta")
                if meta is None or isinstance(meta, dict):
                    out[(path.name, line)] = (obj["text"], (meta or {}).get("pile_set_name", ""))
    return out


def test_tokens_and_provenance_match_source_documents(dirty_corpus, dirty_build, tokenizer):
    expected = _texts_by_position(dirty_corpus)
    prov = pq.read_table(dirty_build / provenance.FILE_NAME).to_pylist()
    ds = indexed.IndexedDataset(dirty_build / "pile_text_document")
    assert len(prov) == len(ds) == len(expected)
    keys = [(r["source"], r["line"]) for r in prov]
    assert keys == sorted(expected), "documents must be in (source, line) order"
    start = 0
    for row in prov:
        text, subset = expected[(row["source"], row["line"])]
        tokens = ds[row["doc"]]
        assert tokens.tolist() == tokenizer.encode(text).ids + [0]
        assert row["tokens"] == len(tokens) and row["token_start"] == start
        assert row["pile_set_name"] == subset and row["bytes"] == len(text.encode())
        start += row["tokens"]
    assert [r["doc"] for r in prov] == list(range(len(prov)))


def test_accounting_and_rejects(dirty_corpus, dirty_build):
    report = json.loads((dirty_build / "report.json").read_text())
    truth = json.loads((dirty_corpus / "truth.json").read_text())
    assert report["lines_read"] == sum(s["lines"] for s in truth["shards"])
    assert report["rejected"] == BAD_REASONS
    assert report["lines_read"] == report["kept"] + report["duplicates"] + sum(report["rejected"].values())
    rejects = [json.loads(x) for x in (dirty_build / "rejects.jsonl").read_text().splitlines()]
    assert {(r["source"], r["line"]) for r in rejects} == {(f"{s:02d}.jsonl.zst", ln) for s, ln, _ in BAD_LINES}
    assert all(r["reason"] in BAD_REASONS and r["detail"] for r in rejects)
    ds = indexed.IndexedDataset(dirty_build / "pile_text_document")
    assert report["tokens"] == int(ds.sizes.sum()) and report["kept"] == len(ds)
    assert sum(s["documents"] for s in report["subsets"].values()) == report["kept"]


def test_manifest_hashes_every_output(clean_corpus, clean_build):
    import hashlib

    manifest = json.loads((clean_build / "manifest.json").read_text())
    for name, entry in manifest["outputs"].items():
        data = (clean_build / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    for inp, path in zip(manifest["inputs"], shard_files(clean_corpus)):
        assert inp["name"] == path.name
        assert inp["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["format"]["dtype"] == "uint16" and manifest["tokenizer"]["eod_id"] == 0
    assert not (clean_build / ".pileprep-work").exists()


def _outputs(d):
    return {name: (d / name).read_bytes() for name in OUTPUTS}


@pytest.mark.parametrize("scheduler,workers,partition_bytes", [
    pytest.param(None, 1, 1_000_000, marks=pytest.mark.slow),
    # 20 kB partitions: ~15 per shard, more than READ_AHEAD, so reads pause for their readers
    pytest.param(None, 2, 20_000, marks=pytest.mark.slow), ("synchronous", 1, 10_000_000)])
def test_same_bytes_whatever_workers_partitions_and_scheduler(
        dirty_corpus, dirty_build, tokenizer_spec, tmp_path, scheduler, workers, partition_bytes):
    cfg = make_config([dirty_corpus], tmp_path, tokenizer_spec, scheduler=scheduler,
                      workers=workers, partition_bytes=partition_bytes)
    build(cfg)
    assert _outputs(tmp_path) == _outputs(dirty_build)


def test_input_order_and_spelling_do_not_matter(clean_corpus, clean_build, tokenizer_spec, tmp_path):
    files = shard_files(clean_corpus)[::-1]  # given in reverse, still sorted by name
    build(make_config(files, tmp_path, tokenizer_spec, partition_bytes=300_000))
    assert _outputs(tmp_path) == _outputs(clean_build)


def test_resume_reuses_finished_work(dirty_corpus, dirty_build, tokenizer_spec, tmp_path, capsys):
    cfg = make_config([dirty_corpus], tmp_path, tokenizer_spec, partition_bytes=50_000, keep_work=True)
    build(cfg)
    work = tmp_path / ".pileprep-work"
    parts = sorted(work.glob("tokens-*/*.done.json"))
    assert len(parts) > 3
    parts[1].unlink()  # as if the build had been killed before this part finished
    cfg = with_settings(cfg, {"quiet": False})
    build(cfg)
    err = capsys.readouterr().err
    assert "ingest: reusing 3 of 3 shards" in err
    assert f"tokenize: reusing {len(parts) - 1} of {len(parts)} partitions" in err
    assert _outputs(tmp_path) == _outputs(dirty_build)


def test_refuses_output_dir_holding_another_build(tmp_path, tokenizer_spec):
    from pileprep.sources.synth import SynthConfig, generate

    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    generate(SynthConfig(a, shards=1, megabytes=0.05, seed=1))
    generate(SynthConfig(b, shards=1, megabytes=0.05, seed=2))  # same shard name, other content
    build(make_config([a], out, tokenizer_spec))
    before = _outputs(out)
    with pytest.raises(ConfigError, match="holds a different build"):
        build(make_config([b], out, tokenizer_spec))
    assert _outputs(out) == before
    build(make_config([a], out, tokenizer_spec))  # the same build again is allowed
    assert _outputs(out) == before
    build(make_config([b], out, tokenizer_spec), overwrite=True)
    assert _outputs(out) != before


def test_overwrite_removes_the_replaced_builds_outputs(tmp_path, tokenizer_spec):
    """A plain build replaced by a deduplicated one (another dataset name) with --overwrite:
    the plain dataset's files go, nothing the new manifest does not name is left, and the
    directory verifies."""
    from pileprep.checks.verify import verify
    from pileprep.core.config import with_settings
    from pileprep.sources.synth import SynthConfig, generate

    a, out = tmp_path / "a", tmp_path / "out"
    generate(SynthConfig(a, shards=1, megabytes=0.05, seed=1))
    build(make_config([a], out, tokenizer_spec, name=""))  # the name follows the settings
    old = set(json.loads((out / "manifest.json").read_text())["outputs"])
    assert "pile_text_document.bin" in old
    build(with_settings(make_config([a], out, tokenizer_spec, name=""), {"dedup.enabled": True}),
          overwrite=True)
    new = set(json.loads((out / "manifest.json").read_text())["outputs"])
    files = {p.name for p in out.iterdir() if p.is_file()}
    assert "pile_0.87_deduped_text_document.bin" in new and not (old - new) & files
    assert files - new <= {"manifest.json", "report.json"}
    assert verify(out).problems == []


def test_plain_jsonl_and_custom_name(tmp_path, tokenizer, tokenizer_spec):
    shard = tmp_path / "in" / "a.jsonl"
    shard.parent.mkdir()
    docs = ["héllo  world\r\n", "<|endoftext|> inside", " ", "last line without newline"]
    shard.write_text("\n".join(json.dumps({"text": t}) for t in docs), encoding="utf-8")
    build(make_config([shard], tmp_path / "out", tokenizer_spec, name="tiny"))
    ds = indexed.IndexedDataset(tmp_path / "out" / "tiny_text_document")
    assert [d.tolist() for d in ds] == [tokenizer.encode(t).ids + [0] for t in docs]
    assert ds[1].tolist()[0] == 0  # the literal <|endoftext|> is the EOD token, as in GPT-NeoX
    prov = provenance.read(tmp_path / "out").to_pylist()
    assert [r["pile_set_name"] for r in prov] == [""] * 4


def test_sizes_sum_matches_bin_length(clean_build):
    ds = indexed.IndexedDataset(clean_build / "pile_text_document")
    assert int(ds.sizes.astype(np.int64).sum()) * 2 == (clean_build / "pile_text_document.bin").stat().st_size


def test_broken_shards_are_reported_and_accounted(tmp_path, tokenizer_spec):
    import shutil

    from pileprep.sources.synth import SynthConfig, generate

    src = tmp_path / "src"
    generate(SynthConfig(src, shards=2, megabytes=0.6, seed=9))
    shards = tmp_path / "shards"
    shards.mkdir()
    shutil.copy(src / "00.jsonl.zst", shards / "00.jsonl.zst")
    data = (src / "01.jsonl.zst").read_bytes()
    (shards / "01.jsonl.zst").write_bytes(data[: len(data) * 2 // 3])  # cut mid-stream
    (shards / "02.jsonl.zst").write_bytes(b"PK\x03\x04 a zip file, not zstd")
    (shards / "03.jsonl.zst").write_bytes(b"")
    build(make_config([shards], tmp_path / "out", tokenizer_spec))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    errors = {e["source"]: e["reason"] for e in report["shard_errors"]}
    assert errors == {"01.jsonl.zst": "truncated_zstd", "02.jsonl.zst": "not_zstd"}
    assert report["empty_shards"] == ["02.jsonl.zst", "03.jsonl.zst"]
    assert report["lines_read"] == report["kept"] + sum(report["rejected"].values())
    assert report["rejected"].get("truncated_line", 0) <= 1
    good = [p for p in megatron_ref.iter_shard_texts(src / "00.jsonl.zst")]
    cut = report["shards"][1]
    assert 0 < cut["kept"] < len(list(megatron_ref.iter_shard_texts(src / "01.jsonl.zst")))
    assert report["shards"][0]["kept"] == len(good)
    # The console says it too, not only report.json.
    from pileprep.stages.report import shard_warnings

    lines = shard_warnings(report)
    assert any(ln.startswith("warning: 01.jsonl.zst stopped after line") and "truncated_zstd" in ln
               for ln in lines)
    assert any(ln.startswith("warning: 02.jsonl.zst") and "not_zstd" in ln for ln in lines)
    assert lines[-1] == "note: 1 shard(s) held no lines: 03.jsonl.zst"


def _snapshots(monkeypatch, out):
    """Record, after every task, which files exist under ``out``: (task name, {"stage/name"}),
    the stage being the work directory's kind (ingest, tokens, kept, sig)."""
    from pileprep.runner import dask_runner as runner

    seen = []
    real = runner.execute_timed

    def spy(task):
        result = real(task)
        seen.append((task.name, {f"{p.parent.name.split('-')[0]}/{p.name}"
                                 for p in out.rglob("*") if p.is_file()}))
        return result

    monkeypatch.setattr(runner, "execute_timed", spy)
    return seen


def _done_then_absent(seen, finished_by, name):
    """Whether ``name`` is absent from every snapshot after the one of the last of
    ``finished_by`` (the driver deletes a file when it hears that its last reader finished)."""
    names = [n for n, _ in seen]
    if not all(f in names for f in finished_by):
        return False
    after = max(names.index(f) for f in finished_by)
    return all(name not in files for _, files in seen[after + 1:])


def _written(monkeypatch):
    """Every partition written for tokenize (and MinHash) tasks, as an ingest task does when the
    hand-off flag is up; never consumed inline."""
    monkeypatch.setattr(stage_graph._Graph, "_inline", lambda self, shard: None)


def _cut_and_build(corpus, out, tokenizer_spec, monkeypatch, mode):
    """Build with partitions consumed ``mode`` (inline, written, mixed); return how each
    partition was consumed and where the shards were cut."""
    import itertools

    from pileprep.stages import consumers

    seen = []
    real = consumers.tokenize_partition

    def spy(**kwargs):
        part = kwargs["part"]
        seen.append(("inline" if "records" in kwargs else "written",
                     (part.shard_index, part.index, part.first_line, part.rows, part.text_bytes)))
        return real(**kwargs)

    with monkeypatch.context() as m:
        m.setattr(consumers, "tokenize_partition", spy)
        if mode == "written":
            m.setattr(stage_graph._Graph, "_inline", lambda self, shard: None)
        elif mode == "mixed":
            turns = itertools.cycle([True, False])
            m.setattr(consumers.Inline, "now", lambda self: next(turns))
        report = build(make_config([corpus], out, tokenizer_spec, partition_bytes=50_000))
    return [way for way, _ in seen], sorted(cut for _, cut in seen), report


@pytest.mark.parametrize("mode", ["written", "mixed"])
def test_inline_written_or_mixed_partitions_give_the_same_cuts_and_bytes(
        dirty_corpus, tokenizer_spec, tmp_path, monkeypatch, mode):
    """Who consumes a partition (its ingest task, from memory, or a tokenize task, from its
    file) changes neither where the shard is cut (a rerun reuses records of partitions cut
    alike) nor a byte of the outputs. Row groups are smaller than partitions, as by default."""
    from pileprep.stages import ingest

    monkeypatch.setattr(ingest._PartitionWriter, "ROW_GROUP_BYTES", 8_000)
    ways, cuts, _ = _cut_and_build(dirty_corpus, tmp_path / "inline", tokenizer_spec, monkeypatch,
                                   "inline")
    assert set(ways) == {"inline"} and len(cuts) > 6
    ways, other_cuts, report = _cut_and_build(dirty_corpus, tmp_path / mode, tokenizer_spec,
                                              monkeypatch, mode)
    assert set(ways) == ({"inline", "written"} if mode == "mixed" else {"written"})
    assert other_cuts == cuts
    assert _outputs(tmp_path / mode) == _outputs(tmp_path / "inline")
    assert report["rates"]["tokenize"]["task_cpu_seconds"] > 0  # inline time counted there


def test_the_handoff_flag_is_up_while_a_worker_would_have_nothing_to_do(tmp_path):
    from pileprep.stages import consumers

    graph = object.__new__(stage_graph._Graph)  # only the flag's rule is tried here
    graph.workers, graph.flag = 2, tmp_path / "handoff"
    inline = consumers.Inline(None, str(graph.flag), None)
    graph.handoff(5)  # both workers busy, three tasks waiting
    assert inline.now() and not graph.flag.exists()
    graph.handoff(2)  # both busy, nothing waiting: the first to finish would idle
    assert graph.flag.exists() and not inline.now()
    graph.handoff(3)
    assert inline.now()
    assert consumers.Inline(None, None, None).now()  # one worker: always inline


@pytest.mark.parametrize("dedup", [False, True])
def test_scratch_files_are_deleted_once_consumed(dirty_corpus, dirty_build, tokenizer_spec,
                                                 tmp_path, monkeypatch, dedup):
    _written(monkeypatch)
    seen = _snapshots(monkeypatch, tmp_path)
    cfg = make_config([dirty_corpus], tmp_path, tokenizer_spec, partition_bytes=50_000)
    cfg = with_settings(cfg, {"dedup.enabled": dedup})
    build(cfg)
    stems = sorted({n.removeprefix("ingest/").removesuffix(".parquet") for _, files in seen
                    for n in files if n.startswith("ingest/") and n.endswith(".parquet")})
    assert len(stems) > 3
    for stem in stems:
        readers = [f"tokenize {stem}"] + ([f"minhash {stem}"] if dedup else [])
        assert _done_then_absent(seen, readers, f"ingest/{stem}.parquet"), stem
        if not dedup:  # appended to the .bin as soon as every earlier part was
            assert _done_then_absent(seen, [f"tokenize {s}" for s in stems if s <= stem],
                                     f"tokens/{stem}.bin"), stem
    assert any(f"tokens/{stems[-1]}.bin" in files for _, files in seen)  # it did exist
    if not dedup:
        assert _outputs(tmp_path) == _outputs(dirty_build)


def test_keep_work_keeps_every_intermediate(dirty_corpus, dirty_build, tokenizer_spec, tmp_path):
    cfg = make_config([dirty_corpus], tmp_path, tokenizer_spec, partition_bytes=50_000,
                      keep_work=True)
    build(cfg)
    work = tmp_path / ".pileprep-work"
    partitions = list(work.glob("ingest-*/*.?????.parquet"))
    token_bins = [p for p in work.glob("tokens-*/*.bin") if p.name != "packed.bin"]
    assert len(partitions) > 3 and len(token_bins) == len(partitions)
    assert _outputs(tmp_path) == _outputs(dirty_build)


def test_a_read_partition_is_tokenized_before_the_next_shard_is_read(
        dirty_corpus, tokenizer_spec, tmp_path, monkeypatch):
    _written(monkeypatch)  # inline, it is tokenized by the reading task itself
    seen = _snapshots(monkeypatch, tmp_path)
    build(make_config([dirty_corpus], tmp_path, tokenizer_spec, partition_bytes=50_000))
    stages = [name.split()[0] for name, _ in seen]
    assert stages[:2] == ["ingest", "tokenize"]  # not every shard's ingest first
    assert stages.count("ingest") == 3


def test_ingest_writes_read_progress_while_reading(dirty_corpus, tmp_path, monkeypatch):
    from pileprep.stages import ingest
    from pileprep.core.config import ReadConfig
    from pileprep.sources import discover

    records = []
    real = ingest.atomic.write_json

    def spy(path, obj):
        if str(path).endswith(".reading.json"):
            records.append(obj)
        real(path, obj)

    monkeypatch.setattr(ingest, "PROGRESS_SECONDS", 0.0)
    monkeypatch.setattr(ingest.atomic, "write_json", spy)
    shard = discover([str(dirty_corpus)])[0]
    result = ingest.ingest_shard(shard, 0, str(tmp_path), ReadConfig(partition_bytes=50_000))
    reads = [r["read"] for r in records]
    assert len(reads) > 2 and reads == sorted(reads) and reads[0] < result.size
    assert all(r["size"] == shard.size and r["seconds"] >= 0 for r in records)
    assert not ingest.reading_record(tmp_path, shard.file_stem).exists()  # gone when read


def test_progress_lines_name_the_shard_being_read(tmp_path, capsys):
    from pileprep.stages.progress import GraphProgress as _Bars

    bars = _Bars(quiet=False, ingest=[], minhash_on=False)
    bars.bars["ingest"].interval = 0.0
    bars.read({"00.jsonl.zst": (10_000_000, 40_000_000, 2.0)})
    bars.read({"00.jsonl.zst": (20_000_000, 40_000_000, 4.0), "01.jsonl.zst": (0, 9, 0.0)})
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "[read] 00.jsonl.zst 10.0/40.0 MB read  5.00 MB/s  ETA 0:00:06"
    assert err[1] == "[read] 00.jsonl.zst 20.0/40.0 MB read  5.00 MB/s  ETA 0:00:04"
    assert err[2] == "[read] 01.jsonl.zst 0.0/0.0 MB read  0.00 MB/s  ETA ?"


def test_progress_says_how_much_of_the_whole_input_is_read(capsys):
    import time
    from types import SimpleNamespace

    from pileprep.stages.progress import GraphProgress as _Bars

    bars = _Bars(quiet=False, ingest=[SimpleNamespace(weight=40_000_000),
                                      SimpleNamespace(weight=60_000_000)], minhash_on=False)
    bar = bars.bars["ingest"]
    bar.interval, bar.start = 0.0, time.monotonic() - 10.0
    bars.read({"00.jsonl.zst": (20_000_000, 40_000_000, 10.0)})
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "[read] all 2 shards 20.0/100.0 MB read  2.00 MB/s  ETA 0:00:40"


def test_report_has_per_stage_rates(dirty_build):
    rates = json.loads((dirty_build / "report.json").read_text())["rates"]
    assert {"ingest", "tokenize", "pack", "end_to_end"} <= rates.keys()
    assert rates["tokenize"]["bytes"] > 0 and rates["tokenize"]["MB_per_s_per_core"] > 0
    assert rates["pack"]["bytes"] == (dirty_build / "pile_text_document.bin").stat().st_size


def test_a_read_pauses_while_its_partitions_wait_for_readers(tmp_path):
    import threading

    from pileprep.stages import ingest

    paths = [tmp_path / f"p{i}" for i in range(3)]
    for p in paths:
        p.write_bytes(b"x")
    ingest._wait_for_readers([str(p) for p in paths], 4)  # under the limit: no wait
    deleter = threading.Timer(0.2, paths[0].unlink)  # a reader finishing, as the driver sees it
    deleter.start()
    ingest._wait_for_readers([str(p) for p in paths], 3)  # at the limit: waits for a deletion
    deleter.join()
    assert not paths[0].exists() and paths[1].exists()
