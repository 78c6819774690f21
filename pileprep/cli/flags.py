"""Flags shared by several commands, defined once, and how they become settings.

Each flag that sets a setting is named in :data:`SETTINGS` with its ``section.key``: the
settings are built from it (:func:`build_config`), and an error that names a setting as
``section.key`` (as the library does for every caller) is shown with the flag instead
(:func:`in_flag_words`).
"""

from __future__ import annotations

import argparse
import dataclasses
import re

from pileprep.core.config import BuildConfig, ScheduleConfig, load_toml, with_settings

# argparse dest -> (section, key, flag). A section of "" is a field of BuildConfig itself.
SETTINGS = {
    "input": ("read", "inputs", "--input"),
    "partition_bytes": ("read", "partition_bytes", "--partition-bytes"),
    "strict": ("read", "strict", "--strict"),
    "text_column": ("read", "text_column", "--text-column"),
    "tokenizer": ("tokenize", "tokenizer", "--tokenizer"),
    "tokenizer_engine": ("tokenize", "engine", "--tokenizer-engine"),
    "output": ("pack", "output", "--output"),
    "name": ("pack", "name", "--name"),
    "workers": ("cluster", "workers", "--workers"),
    "scheduler": ("cluster", "scheduler", "--scheduler"),
    "connect_timeout": ("cluster", "connect_timeout", "--connect-timeout"),
    "memory_limit": ("cluster", "memory_limit", "--memory-limit"),
    "dedup": ("dedup", "enabled", "--dedup"),
    "threshold": ("dedup", "threshold", "--threshold"),
    "num_perm": ("dedup", "num_perm", "--num-perm"),
    "minhash_seed": ("dedup", "seed", "--minhash-seed"),
    "shingle_words": ("dedup", "shingle_words", "--shingle-words"),
    "bands": ("dedup", "bands", "--bands"),
    "rows": ("dedup", "rows", "--rows"),
    "seq_length": ("schedule", "seq_length", "--seq-length"),
    "batch_size": ("schedule", "batch_size", "--batch-size"),
    "train_iters": ("schedule", "train_iters", "--train-iters"),
    "seed": ("schedule", "seed", "--seed"),
    "quiet": ("", "quiet", "--quiet"),
    "keep_work": ("", "keep_work", "--keep-work"),
}
SCHEDULE_DESTS = ("seq_length", "batch_size", "train_iters", "seed")
_FLAG_OF = {f"{section}.{key}": flag for section, key, flag in SETTINGS.values() if section}
_SETTING = re.compile(r"\b(?:%s)\b" % "|".join(re.escape(k) for k in
                                              sorted(_FLAG_OF, key=len, reverse=True)))


def in_flag_words(message: str) -> str:
    """A library message, its settings named by the flags that set them."""
    return _SETTING.sub(lambda m: _FLAG_OF[m.group(0)], message)


def parse_size(text: str) -> int:
    """``32MB``, ``1.5GiB``, ``4096`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    unit = m.group(2).rstrip("b")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
             "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}[unit]
    return int(float(m.group(1)) * scale)


def add_inputs(p, required: bool = False, help: str = "shard directory, glob, file, or "
               "hf:NAME[:CONFIG][@SPLIT] (repeatable); files are sorted by name") -> None:
    g = p.add_argument_group("input")
    g.add_argument("--input", "-i", action="append", required=required, metavar="DIR_OR_GLOB",
                   help=help)
    g.add_argument("--text-column", help="field or column holding the text (default 'text'); "
                   "inputs may be Pile .jsonl[.zst], .parquet, .arrow files, or "
                   "hf:NAME[:CONFIG][@SPLIT] for a Hugging Face datasets source (streamed)")
    g.add_argument("--partition-bytes", type=parse_size,
                   help="approximate JSON bytes per partition, the unit of work (default "
                   "32MiB, at most 1GiB: a worker holds one in memory while it tokenizes it)")


def add_tokenizer(p, help: str = "tokenizer.json path or hub id (env PILEPREP_TOKENIZER)",
                  engine: bool = True) -> None:
    p.add_argument("--tokenizer", help=help)
    if engine:
        from pileprep.tokenizer import engine_names

        p.add_argument("--tokenizer-engine", choices=engine_names(),
                       help="auto (default): the fast engine (compiled pre-tokenizer and word "
                       "memo) when it reproduces the tokenizer file, else the tokenizers "
                       "library; same ids either way")


def add_cluster(p) -> None:
    """Where the Dask tasks run: the same flags for every command that runs them."""
    g = p.add_argument_group("where the work runs (Dask)")
    g.add_argument("--workers", type=int, help="local Dask worker processes (default: all cores)")
    g.add_argument("--scheduler", help="address of a running dask.distributed scheduler "
                   "(tcp://HOST:PORT), or 'synchronous' to run in this process")
    g.add_argument("--connect-timeout", type=float,
                   help="seconds to wait for --scheduler to answer (default 30)")
    g.add_argument("--memory-limit", help="memory of each local worker, e.g. 4GiB (default "
                   "auto: the machine's memory shared by the workers); a worker over it is "
                   "restarted and its task retried, a few times at most")


def add_work(p) -> None:
    p.add_argument("--keep-work", action="store_true", default=None,
                   help="keep intermediate stage files")
    p.add_argument("--quiet", "-q", action="store_true", default=None, help="no progress output")


def add_dedup(p) -> None:
    g = p.add_argument_group("near-duplicate removal (with --dedup, or the dedup command)")
    g.add_argument("--threshold", type=float, help="Jaccard similarity of 5-word shingle sets "
                   "at which documents are duplicates (default 0.87, as Pythia)")
    g.add_argument("--num-perm", type=int, help="MinHash permutations (default 128)")
    g.add_argument("--minhash-seed", type=int, help="MinHash permutation seed (default 1)")
    g.add_argument("--shingle-words", type=int, help="words per shingle (default 5)")
    g.add_argument("--bands", type=int, help="LSH bands (default: datasketch's optimum)")
    g.add_argument("--rows", type=int, help="LSH rows per band (with --bands)")
    g.add_argument("--no-verify", action="store_true", default=None,
                   help="join LSH candidates without checking their estimated Jaccard")


def dedup_flags_given(args) -> list[str]:
    """The near-duplicate flags given on the command line (``--threshold`` ...)."""
    dests = ("threshold", "num_perm", "minhash_seed", "shingle_words", "bands", "rows",
             "no_verify")
    return ["--" + d.replace("_", "-") for d in dests if vars(args).get(d) is not None]


def add_schedule(p, defaults_from_build: bool = False) -> None:
    g = p.add_argument_group(
        "training schedule (default: the dataset's newest, as `pileprep schedule` last made it)"
        if defaults_from_build else "training schedule (GPT-NeoX settings; Pythia's by default)")
    g.add_argument("--seq-length", type=int, help="tokens per sample minus one (Pythia: 2048)")
    g.add_argument("--batch-size", type=int, help="global batch size in samples (Pythia: 1024)")
    g.add_argument("--train-iters", type=int, help="optimizer steps (Pythia: 143000)")
    g.add_argument("--seed", type=int, help="data seed (Pythia: 1234)")


def schedule_overrides(args) -> dict:
    return {k: getattr(args, k) for k in SCHEDULE_DESTS if getattr(args, k, None) is not None}


def build_config(args, schedule: bool = True) -> BuildConfig:
    """The settings a command's flags give: its ``--config`` file (if it has one) or the
    defaults, with every flag given on top. ``schedule=False``: no training order."""
    config_file = vars(args).get("config")
    cfg = load_toml(config_file) if config_file else BuildConfig()
    changes = {}
    for dest, value in vars(args).items():
        if dest in SETTINGS and value is not None and dest not in SCHEDULE_DESTS:
            section, key, _ = SETTINGS[dest]
            changes[f"{section}.{key}" if section else key] = value
    if vars(args).get("no_verify"):
        changes["dedup.verify"] = False
    if vars(args).get("on_bad_record"):
        changes["read.strict"] = args.on_bad_record == "stop"
    if not schedule or vars(args).get("no_schedule"):
        changes["schedule"] = None
    elif cfg.schedule is not None:
        changes.update({f"schedule.{k}": v for k, v in schedule_overrides(args).items()})
    return with_settings(cfg, changes)


def schedule_config(args) -> ScheduleConfig:
    return dataclasses.replace(ScheduleConfig(), **schedule_overrides(args))
