"""Shared fixtures: generated corpora and builds, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pileprep.config import BuildConfig, default_tokenizer
from pileprep.pipeline import build
from pileprep.synth import SynthConfig, generate

# Lines no valid Pile record looks like, planted at known places: (shard, line, raw bytes).
BAD_LINES = [
    (0, 3, b'{"text": "unterminated'),
    (0, 7, b'{"text": 42, "meta": {"pile_set_name": "Github"}}'),
    (1, 0, b'{"meta": {"pile_set_name": "Github"}}'),
    (1, 5, b'{"text": "", "meta": {"pile_set_name": "Github"}}'),
    (1, 9, b'{"text": "bad utf8 \xff\xfe here", "meta": {"pile_set_name": "Github"}}'),
    (2, 2, b'{"text": "lone \\ud800 surrogate", "meta": {"pile_set_name": "Github"}}'),
    (2, 4, b'["not", "an", "object"]'),
    (2, 6, b'{"text": "meta is odd", "meta": "Github"}'),
    (2, 8, b''),
]
BAD_REASONS = {"invalid_json": 2, "text_not_string": 1, "missing_text": 1, "empty_text": 1,
               "invalid_utf8": 1, "lone_surrogate": 1, "not_an_object": 1, "bad_meta": 1}


@pytest.fixture(scope="session")
def tokenizer_spec() -> str:
    return default_tokenizer()


@pytest.fixture(scope="session")
def tokenizer(tokenizer_spec):
    from pileprep.tokenize import load_tokenizer

    return load_tokenizer(tokenizer_spec)


@pytest.fixture(scope="session")
def clean_corpus(tmp_path_factory) -> Path:
    """Three valid shards, about 1 MB each, with planted duplicates."""
    out = tmp_path_factory.mktemp("clean") / "shards"
    generate(SynthConfig(out, shards=3, megabytes=1.0, seed=11))
    return out


@pytest.fixture(scope="session")
def dirty_corpus(tmp_path_factory) -> Path:
    """Three shards with every kind of bad line planted (see BAD_LINES)."""
    out = tmp_path_factory.mktemp("dirty") / "shards"
    generate(SynthConfig(out, shards=3, megabytes=0.3, seed=5, bad_lines=list(BAD_LINES)))
    return out


def make_config(inputs, output, tokenizer_spec, **kw) -> BuildConfig:
    cfg = BuildConfig()
    cfg.read.inputs = [str(i) for i in inputs]
    cfg.pack.output = str(output)
    cfg.tokenize.tokenizer = tokenizer_spec
    cfg.cluster.scheduler = kw.pop("scheduler", "synchronous")
    cfg.cluster.workers = kw.pop("workers", 1)
    cfg.read.partition_bytes = kw.pop("partition_bytes", cfg.read.partition_bytes)
    cfg.read.strict = kw.pop("strict", False)
    cfg.pack.name = kw.pop("name", "pile")
    cfg.keep_work = kw.pop("keep_work", False)
    cfg.schedule = kw.pop("schedule_cfg", None)
    cfg.quiet = True
    assert not kw, kw
    return cfg


@pytest.fixture(scope="session")
def clean_build(clean_corpus, tokenizer_spec, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean_build")
    build(make_config([clean_corpus], out, tokenizer_spec, partition_bytes=200_000))
    return out


@pytest.fixture(scope="session")
def dirty_build(dirty_corpus, tokenizer_spec, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dirty_build")
    build(make_config([dirty_corpus], out, tokenizer_spec, partition_bytes=50_000))
    return out


API_SCHEDULE = dict(seq_length=128, batch_size=8, train_iters=200, seed=1234)


@pytest.fixture(scope="session")
def scheduled_build(clean_corpus, tokenizer_spec, tmp_path_factory) -> Path:
    """The clean corpus built with a small schedule (API_SCHEDULE), as a reader would open it."""
    from pileprep.config import ScheduleConfig

    out = tmp_path_factory.mktemp("scheduled_build")
    build(make_config([clean_corpus], out, tokenizer_spec, partition_bytes=300_000,
                      schedule_cfg=ScheduleConfig(**API_SCHEDULE)))
    return out


def shard_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.iterdir() if p.name.endswith((".jsonl.zst", ".jsonl")))


os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
