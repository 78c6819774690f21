"""The command line: the README's commands, clear one-line errors, pipeline files, progress."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import BAD_LINES
from pileprep.cli.flags import parse_size
from pileprep.cli.main import main
from pileprep.core.config import load_toml, with_settings
from pileprep.core.errors import ConfigError


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pileprep.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.mark.slow
def test_synth_then_build_from_the_command_line(tmp_path, tokenizer_spec):
    shards = tmp_path / "shards"
    r = run("synth", "--output", str(shards), "--shards", "2", "--megabytes", "0.2", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert "wrote 2 shards" in r.stdout
    out = tmp_path / "out"
    r = run("build", "--input", str(shards), "--output", str(out), "--tokenizer", tokenizer_spec,
            "--scheduler", "synchronous", "--seq-length", "128", "--batch-size", "4",
            "--train-iters", "50")
    assert r.returncode == 0, r.stderr
    assert "[tokenize]" in r.stderr and "MB/s" in r.stderr and "ETA" in r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["kept"] == report["lines_read"] > 0
    r = run("build", "-i", str(shards), "-o", str(tmp_path / "q"), "--tokenizer", tokenizer_spec,
            "--scheduler", "synchronous", "--quiet", "--no-schedule")
    assert r.returncode == 0 and r.stderr == ""
    assert not list((tmp_path / "q").glob("*indexmap*"))
    # A dedup flag without --dedup, and a schedule that repeats the corpus ~100+ times: said
    # even with --quiet, one line each.
    r = run("build", "-i", str(shards), "-o", str(tmp_path / "w"), "--tokenizer", tokenizer_spec,
            "--scheduler", "synchronous", "--quiet", "--threshold", "0.5", "--seq-length", "128",
            "--batch-size", "64", "--train-iters", "4000")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[1] == "warning: --threshold without --dedup: no near-duplicates were removed"
    assert len(lines) == 2 and lines[0].startswith("warning: 4,000 steps x 64 sequences of 128")
    assert "--train-iters" in lines[0]
    assert len(list(out.glob("pile_text_document_train_0_indexmap_201ns_128sl_1234s_packedpi_ac_*_idx.npy"))) == 3


def test_strict_exits_2_naming_file_and_line(dirty_corpus, tokenizer_spec, tmp_path):
    r = run("build", "-i", str(dirty_corpus), "-o", str(tmp_path), "--tokenizer", tokenizer_spec,
            "--scheduler", "synchronous", "--strict", "--quiet", "--no-schedule")
    assert r.returncode == 2
    first = min(BAD_LINES)
    assert r.stderr.strip() == (f"pileprep build: error: {first[0]:02d}.jsonl.zst: line {first[1]} "
                                "(0-based): invalid_json: " + r.stderr.split("invalid_json: ", 1)[1].strip())
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["-i", "/nonexistent/shards", "-o", "OUT"], "does not exist"),
    (["-o", "OUT"], "no --input given"),
    (["-i", "IN", "-o", "OUT", "--workers", "0"], "--workers must be at least 1"),
    (["-i", "IN", "-o", "OUT", "--tokenizer", "/no/such/tokenizer.json"], "cannot load tokenizer"),
])
def test_setting_errors_are_one_line(tmp_path, args, message, capsys):
    (tmp_path / "IN").mkdir()
    (tmp_path / "IN" / "00.jsonl").write_text('{"text": "x"}\n')
    args = [a.replace("OUT", str(tmp_path / "out")).replace("IN", str(tmp_path / "IN")) if a in ("OUT", "IN") else a for a in args]
    code = main(["build", *args, "--scheduler", "synchronous", "--quiet", "--no-schedule"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_pipeline_toml(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[read]\npartition_bytes = 4096\n[pack]\nname = "pile_test"\n[cluster]\nworkers = 3\n')
    cfg = load_toml(f)
    assert (cfg.read.partition_bytes, cfg.pack.name, cfg.cluster.workers) == (4096, "pile_test", 3)
    f.write_text("[read]\nbogus = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        load_toml(f)


def test_shipped_pipeline_files_load():
    from pathlib import Path

    files = {f.name: load_toml(f) for f in (Path(__file__).parent.parent / "pipelines").glob("*.toml")}
    assert files["pile.toml"].dataset_name == "pile"
    assert not files["pile.toml"].dedup.enabled
    dedup = files["pile_dedup.toml"]
    assert dedup.dedup.enabled and dedup.dedup.threshold == 0.87
    assert dedup.dataset_name == "pile_0.87_deduped"
    for cfg in files.values():
        cfg = with_settings(cfg, {"pack.output": "x", "read.inputs": ["y"]})
        cfg.validate()


@pytest.mark.parametrize("text,value", [("4096", 4096), ("32MB", 32_000_000), ("32MiB", 32 << 20),
                                        ("1.5G", 1_500_000_000), ("2kib", 2048)])
def test_parse_size(text, value):
    assert parse_size(text) == value
