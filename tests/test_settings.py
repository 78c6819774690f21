"""Settings: what a pipeline file or a flag promises is what the build does, and every bad value
is a one-line error before work starts (never a traceback)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import megatron_ref
from helpers import make_config, shard_files
from pileprep.jobs.build import build, validate
from pileprep.cli.main import main
from pileprep.core.config import BuildConfig, load_toml, with_settings
from pileprep.core.errors import ConfigError
from pileprep.formats import indexed

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("engine", ["fast", pytest.param("reference", marks=pytest.mark.slow)])
def test_append_eod_false_writes_what_preprocess_data_writes_without_the_flag(
        clean_corpus, tokenizer, tokenizer_spec, tmp_path, engine):
    toml = tmp_path / "noeod.toml"
    toml.write_text(f'[tokenize]\nappend_eod = false\nengine = "{engine}"\n')
    cfg = load_toml(toml)
    base = make_config([clean_corpus], tmp_path / "out", tokenizer_spec, partition_bytes=300_000)
    cfg = dataclasses.replace(cfg, read=base.read, pack=base.pack, cluster=base.cluster,
                              schedule=None, quiet=True,
                              tokenize=dataclasses.replace(cfg.tokenize, tokenizer=tokenizer_spec))
    build(cfg)
    ref = tmp_path / "ref_text_document"
    megatron_ref.reference_build(shard_files(clean_corpus), tokenizer, ref, append_eod=False)
    ours = tmp_path / "out" / "pile_text_document"
    assert ours.with_suffix(".bin").read_bytes() == ref.with_suffix(".bin").read_bytes()
    assert ours.with_suffix(".idx").read_bytes() == ref.with_suffix(".idx").read_bytes()
    docs = indexed.IndexedDataset(ours)
    assert sum(int(docs[i][-1] == 0) for i in range(len(docs))) < len(docs) // 10


def _cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
    return code, err.getvalue()


@pytest.mark.parametrize("flags,named", [(["--threshold", "1.0"], "--threshold"),
                                         (["--num-perm", "2"], "--num-perm"),
                                         (["--num-perm", "100000"], "--num-perm"),
                                         (["--minhash-seed", "-1"], "--minhash-seed"),
                                         (["--seed", "-5"], "--seed")])
def test_dedup_settings_datasketch_cannot_serve_are_one_line_errors(clean_corpus, tmp_path, flags, named):
    code, err = _cli("build", "--dedup", *flags, "-i", str(clean_corpus), "-o", str(tmp_path / "o"),
                     "--scheduler", "synchronous", "-q")
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and named in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # refused before any work


def test_pipeline_file_values_of_the_wrong_type_are_named(tmp_path):
    toml = tmp_path / "bad.toml"
    for text, message in [('[dedup]\nenabled = true\nthreshold = "high"\n', "dedup.threshold must be float"),
                          ('[schedule]\nseq_length = true\n', "schedule.seq_length must be int"),
                          ('[tokenize]\nappend_eod = "no"\n', "tokenize.append_eod must be bool")]:
        toml.write_text(f'[read]\ninputs = ["x"]\n[pack]\noutput = "o"\n{text}')
        with pytest.raises(ConfigError, match=message):
            validate(load_toml(toml))


# Random values of every type for every field of every section: validate() must accept them or
# raise ConfigError; nothing else may escape.
_ANY = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                 st.text(max_size=8), st.lists(st.text(max_size=4), max_size=2))
_SECTIONS = ["read", "tokenize", "pack", "dedup", "cluster", "schedule"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_SECTIONS), st.integers(0, 10), _ANY), max_size=4),
       st.booleans())
def test_validate_accepts_or_names_a_setting(changes, dedup):
    cfg = with_settings(BuildConfig(), {"read.inputs": ["x"], "pack.output": "out",
                                        "dedup.enabled": dedup})
    for section, index, value in changes:
        part = getattr(cfg, section)
        field = dataclasses.fields(part)[index % len(dataclasses.fields(part))]
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(part, **{field.name: value})})
    try:
        validate(cfg)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)


_INT_FLAGS = ["--workers", "--num-perm", "--minhash-seed", "--shingle-words", "--seq-length",
              "--batch-size", "--train-iters", "--seed"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_INT_FLAGS), st.integers(-2**63, 2**63)), max_size=3),
       st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
       st.booleans())
def test_any_numbers_on_the_command_line_end_in_one_line(tmp_path_factory, ints, threshold, dedup):
    args = ["build", "-i", str(tmp_path_factory.getbasetemp() / "no-such-input"),
            "-o", str(tmp_path_factory.getbasetemp() / "never"), "--scheduler", "synchronous", "-q"]
    args += ["--dedup"] if dedup else []
    for flag, value in ints:
        args += [flag, str(value)]
    if threshold is not None:
        args += ["--threshold", repr(threshold)]
    code, err = _cli(*args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_debug_env_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("PILEPREP_DEBUG", "1")
    with pytest.raises(ConfigError):
        main(["build", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "--threshold", "7", "--dedup"])


def test_python_floor_is_the_one_the_code_needs():
    """pyproject and README state the same minimum, and the code imports what that version has
    (tomllib is 3.11+)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'requires-python = ">=(\d+)\.(\d+)"', pyproject).groups()
    assert tuple(map(int, floor)) >= (3, 11)
    assert f"Python {floor[0]}.{floor[1]}+" in (ROOT / "README.md").read_text()
    assert sys.version_info >= tuple(map(int, floor))


def test_declared_dependencies_are_exactly_what_the_code_imports():
    """Every third-party module pileprep imports is a runtime dependency; test-only and
    benchmark-only ones are extras, not runtime."""
    import ast
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_dist(d) for d in meta["dependencies"]}
    extras = {k: {_dist(d) for d in v} for k, v in meta["optional-dependencies"].items()}
    stdlib = set(sys.stdlib_module_names)
    imported = set()
    for path in (ROOT / "pileprep").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                     else [])
            imported |= {n.split(".")[0] for n in names}
    third_party = {_DIST.get(m, m) for m in imported - stdlib - {"pileprep"} - _OPTIONAL}
    assert third_party - runtime == set(), "imported but not declared"
    assert runtime - third_party - _INDIRECT == set(), "declared but never imported"
    assert {"pytest", "hypothesis", "pyyaml"} <= extras["test"] and not {"pytest", "pyyaml"} & runtime
    assert "psutil" in extras["bench"] and "psutil" not in runtime


_DIST = {"yaml": "pyyaml", "distributed": "dask"}  # import name -> distribution name
_OPTIONAL = {"torch", "bokeh"}  # imported only when present (torch adapter, Dask dashboard)
_INDIRECT: set[str] = set()  # declared for a reason other than a direct import


def _dist(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()
