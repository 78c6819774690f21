"""Hugging Face datasets and tables in, exported sequences out, and shard/unshard for uploads."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pileprep
from pileprep.core.config import with_settings
from pileprep.core.errors import InputError
from pileprep.cli.main import main
from pileprep.jobs.build import build
from pileprep.sources.synth import SynthConfig, generate

from helpers import make_config
from megatron_ref import iter_shard_texts


@pytest.fixture(scope="module")
def pile(tmp_path_factory):
    """Two small Pile-format shards (plain JSON lines) and their records, read with json."""
    root = tmp_path_factory.mktemp("interop")
    generate(SynthConfig(root / "jsonl", shards=2, megabytes=0.25, seed=21, compress=False))
    shards = sorted((root / "jsonl").glob("*.jsonl"))
    records = [[obj for _, obj in iter_shard_texts(p)] for p in shards]
    return root, shards, records


def _build(inputs, out, tokenizer_spec, **kw):
    cfg = make_config(inputs, out, tokenizer_spec, partition_bytes=60_000)
    for key, value in kw.items():
        cfg = with_settings(cfg, {f"read.{key}": value})
    build(cfg)
    return out


def _bin_idx(out: Path) -> tuple[bytes, bytes]:
    return ((out / "pile_text_document.bin").read_bytes(), (out / "pile_text_document.idx").read_bytes())


def _prov(out: Path) -> list[tuple]:
    t = pq.read_table(out / "provenance.parquet").to_pylist()
    return [(r["source"], r["line"], r["pile_set_name"]) for r in t]


@pytest.fixture(scope="module")
def jsonl_build(pile, tokenizer_spec, tmp_path_factory):
    root, shards, _ = pile
    return _build(shards, tmp_path_factory.mktemp("from_jsonl"), tokenizer_spec)


def test_tables_and_hf_sources_give_the_same_tokens(pile, jsonl_build, tokenizer_spec, tmp_path):
    root, shards, records = pile
    want = _bin_idx(jsonl_build)
    want_prov = _prov(jsonl_build)
    # The same records as parquet (meta as a struct), Arrow IPC files, and JSON lines whose text
    # column has another name.
    (tmp_path / "pq").mkdir()
    (tmp_path / "arrow").mkdir()
    (tmp_path / "content").mkdir()
    for shard, recs in zip(shards, records):
        stem = shard.name.removesuffix(".jsonl")
        table = pa.Table.from_pylist(recs)
        pq.write_table(table, tmp_path / "pq" / f"{stem}.parquet", row_group_size=37)
        with pa.ipc.new_stream(tmp_path / "arrow" / f"{stem}.arrow", table.schema) as w:
            w.write_table(table, max_chunksize=50)
        with open(tmp_path / "content" / f"{stem}.jsonl", "w", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps({"content": r["text"], "meta": r["meta"]}) + "\n")

    for name, inputs, kw in [("parquet", [tmp_path / "pq"], {}),
                             ("arrow", [tmp_path / "arrow"], {}),
                             ("text column", [tmp_path / "content"], {"text_column": "content"}),
                             ("hf", [f"hf:{tmp_path / 'pq'}@train"], {})]:
        out = _build(inputs, tmp_path / f"out-{name}", tokenizer_spec, **kw)
        assert _bin_idx(out) == want, name
        got = _prov(out)
        assert [(line, subset) for _, line, subset in got] == [(line, s) for _, line, s in want_prov], name
        report = json.loads((out / "report.json").read_text())
        assert report["lines_read"] == sum(map(len, records)) and report["rejected_total"] == 0
    # hf sources are named after the spec and the stream shard
    assert {s for s, _, _ in got} == {f"hf:{tmp_path / 'pq'}@train#0", f"hf:{tmp_path / 'pq'}@train#1"}


def test_bad_rows_in_tables_are_counted(tmp_path, tokenizer_spec):
    rows = [{"text": "a good document", "meta": {"pile_set_name": "X"}},
            {"text": None, "meta": {"pile_set_name": "X"}},
            {"text": "", "meta": None},
            {"text": "another good one", "meta": None}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    out = _build([tmp_path / "t.parquet"], tmp_path / "out", tokenizer_spec)
    report = json.loads((out / "report.json").read_text())
    assert report["kept"] == 2 and report["rejected"] == {"empty_text": 1, "text_not_string": 1}
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["source"], r["line"]) for r in rejects] == [("t.parquet", 1), ("t.parquet", 2)]
    assert _prov(out) == [("t.parquet", 0, "X"), ("t.parquet", 3, "")]


def test_missing_text_column_and_unknown_hf_source(pile, tmp_path, tokenizer_spec, capsys):
    root, shards, _ = pile
    with pytest.raises(InputError, match=r"all [\d,]+ lines read were rejected \(missing_text "
                       r"[\d,]+\); check read.text_column \('body'\)"):
        _build(shards, tmp_path / "out", tokenizer_spec, text_column="body")
    assert not (tmp_path / "out" / "manifest.json").exists()
    code = main(["build", "-i", f"hf:{tmp_path / 'nothing-here'}", "-o", str(tmp_path / "o2"),
                 "--scheduler", "synchronous", "-q", "--no-schedule"])
    assert code == 2 and "cannot open with datasets" in capsys.readouterr().err


@pytest.fixture(scope="module")
def order(scheduled_build):
    return pileprep.open(scheduled_build).schedule()


def test_export_formats_load_with_datasets(scheduled_build, order, tokenizer, tmp_path):
    B = order.cfg.batch_size
    paths = {"parquet": tmp_path / "s.parquet", "jsonl": tmp_path / "s.jsonl", "hf": tmp_path / "s_hf"}
    for fmt, path in paths.items():
        args = ["export", str(scheduled_build), "--steps", "3:5", "--format", fmt, "-o", str(path)]
        assert main(args + (["--text"] if fmt == "hf" else [])) == 0
    loaded = {
        "parquet": datasets.load_dataset("parquet", data_files=str(paths["parquet"]), split="train",
                                         cache_dir=str(tmp_path / "c1")),
        "jsonl": datasets.load_dataset("json", data_files=str(paths["jsonl"]), split="train",
                                       cache_dir=str(tmp_path / "c2")),
        "hf": datasets.load_from_disk(str(paths["hf"])),
    }
    for fmt, ds in loaded.items():
        assert len(ds) == 2 * B, fmt
        for i in (0, B - 1, B, 2 * B - 1):
            step, row = 3 + i // B, i % B
            rec = ds[i]
            assert (rec["step"], rec["row"], rec["sample"]) == (step, row, step * B + row), fmt
            assert rec["tokens"] == order.batch(step)[row].tolist(), fmt
            want = order.sources(step, [row])[0]
            assert [(s["source"], s["line"], s["doc_start"], s["doc_end"], s["row_start"], s["row_end"])
                    for s in rec["sources"]] == [
                (w["source"], w["line"], w["doc_start"], w["doc_end"], w["row_start"], w["row_end"]) for w in want], fmt
    assert loaded["hf"][5]["text"] == tokenizer.decode(loaded["hf"][5]["tokens"], skip_special_tokens=False)
    assert main(["export", str(scheduled_build), "--steps", "3:5", "--format", "hf",
                 "-o", str(paths["hf"])]) == 2  # refuses to overwrite


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shard_unshard_round_trip(scheduled_build, tmp_path, capsys):
    pieces, rebuilt = tmp_path / "pieces", tmp_path / "rebuilt"
    assert main(["shard", str(scheduled_build), "--max-size", "100KB", "-o", str(pieces)]) == 0
    originals = {p.name: p for p in scheduled_build.iterdir() if p.is_file()}
    listed = dict(line.split("  ")[::-1] for line in (pieces / "SHA256SUMS").read_text().splitlines())
    assert all((pieces / name).stat().st_size <= 100_000 for name in listed)
    assert any(".part-" in name for name in listed)  # the .bin was split
    # standard tools check the download
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=pieces, check=True)
    assert main(["unshard", str(pieces), "-o", str(rebuilt)]) == 0
    assert "the build verifies" in capsys.readouterr().out
    assert {p.name: _sha(p) for p in rebuilt.iterdir()} == {n: _sha(p) for n, p in originals.items()}

    victim = next(pieces / n for n in sorted(listed) if ".part-00001-" in n)
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")
    assert main(["unshard", str(pieces), "-o", str(tmp_path / "again")]) == 2
    assert victim.name in capsys.readouterr().err
    victim.unlink()
    assert main(["unshard", str(pieces), "-o", str(tmp_path / "again")]) == 2
    assert "missing piece" in capsys.readouterr().err


def test_inputs_through_fsspec_urls(pile, jsonl_build, tmp_path, tokenizer_spec):
    """Object-store paths go through fsspec: a file:// directory URL, and an in-memory
    filesystem (read by the synchronous scheduler, in this process) give the same dataset."""
    import fsspec

    root, shards, _ = pile
    want = _bin_idx(jsonl_build)
    out = _build([f"file://{shards[0].parent}"], tmp_path / "file-url", tokenizer_spec)
    assert _bin_idx(out) == want
    mem = fsspec.filesystem("memory")
    for p in shards:
        mem.pipe(f"/bucket/pile/{p.name}", p.read_bytes())
    out = _build(["memory://bucket/pile/*.jsonl"], tmp_path / "memory-url", tokenizer_spec)
    assert _bin_idx(out) == want
    assert [i["name"] for i in json.loads((out / "manifest.json").read_text())["inputs"]] == \
        [p.name for p in shards]
