"""Shared fixtures: generated corpora and builds, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import API_SCHEDULE, BAD_LINES, make_config
from pileprep.core.config import default_tokenizer
from pileprep.jobs.build import build
from pileprep.sources.synth import SynthConfig, generate

@pytest.fixture(scope="session")
def tokenizer_spec() -> str:
    return default_tokenizer()


@pytest.fixture(scope="session")
def tokenizer(tokenizer_spec):
    from pileprep.tokenizer import load_tokenizer

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


@pytest.fixture(scope="session")
def scheduled_build(clean_corpus, tokenizer_spec, tmp_path_factory) -> Path:
    """The clean corpus built with a small schedule (API_SCHEDULE), as a reader would open it."""
    from pileprep.core.config import ScheduleConfig

    out = tmp_path_factory.mktemp("scheduled_build")
    build(make_config([clean_corpus], out, tokenizer_spec, partition_bytes=300_000,
                      schedule_cfg=ScheduleConfig(**API_SCHEDULE)))
    return out


os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
