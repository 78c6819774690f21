"""Helpers the tests share: planted bad lines, build settings for tests, small lookups.

Imported as ``from helpers import ...`` (the tests folder is on ``sys.path`` under pytest's
rootdir-relative import mode); fixtures stay in conftest.py.
"""

from __future__ import annotations

from pathlib import Path

from pileprep.core.config import BuildConfig, with_settings

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


def make_config(inputs, output, tokenizer_spec, **kw) -> BuildConfig:
    cfg = with_settings(BuildConfig(), {
        "read.inputs": [str(i) for i in inputs], "pack.output": str(output),
        "tokenize.tokenizer": tokenizer_spec,
        "cluster.scheduler": kw.pop("scheduler", "synchronous"),
        "cluster.workers": kw.pop("workers", 1),
        "read.partition_bytes": kw.pop("partition_bytes", BuildConfig().read.partition_bytes),
        "read.strict": kw.pop("strict", False), "pack.name": kw.pop("name", "pile"),
        "keep_work": kw.pop("keep_work", False), "schedule": kw.pop("schedule_cfg", None),
        "quiet": True})
    assert not kw, kw
    return cfg


API_SCHEDULE = dict(seq_length=128, batch_size=8, train_iters=200, seed=1234)


def shard_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.iterdir() if p.name.endswith((".jsonl.zst", ".jsonl")))


def tiny_build(root: Path, tokenizer_spec: str, schedule: dict) -> Path:
    """~40 generated documents (~25k tokens) built under ``root/out`` with ``schedule`` (a dict
    of ScheduleConfig fields): several epochs for a small step count, in a second."""
    from pileprep.jobs.build import build
    from pileprep.core.config import ScheduleConfig
    from pileprep.sources.synth import SynthConfig, generate

    generate(SynthConfig(root / "shards", shards=2, megabytes=0.035, seed=4, max_doc_words=600))
    out = root / "out"
    build(make_config([root / "shards"], out, tokenizer_spec, partition_bytes=20_000,
                      schedule_cfg=ScheduleConfig(**schedule)))
    return out
