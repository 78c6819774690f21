"""The ``pileprep`` command line: ``build`` and ``synth``.

Every expected failure (bad settings, missing input, a bad record under ``--strict``, a write
error) ends with one line on stderr naming what and where, and exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .config import BuildConfig, ConfigError, default_tokenizer, load_toml


def parse_size(text: str) -> int:
    """``32MB``, ``1.5GiB``, ``4096`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    unit = m.group(2).rstrip("b")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
             "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}[unit]
    return int(float(m.group(1)) * scale)


def _add_build(sub) -> None:
    p = sub.add_parser("build", help="shards -> GPT-NeoX .bin/.idx + provenance")
    p.add_argument("--input", "-i", action="append", default=None, metavar="DIR_OR_GLOB",
                   help="shard directory, glob or file (repeatable); shards sorted by file name")
    p.add_argument("--output", "-o", help="output directory")
    p.add_argument("--config", help="pipeline TOML file (pipelines/*.toml); flags override it")
    p.add_argument("--name", help="dataset name: writes <name>_text_document.bin/.idx (default pile)")
    p.add_argument("--tokenizer", help="tokenizer.json path or hub id "
                   f"(env PILEPREP_TOKENIZER; now {default_tokenizer()})")
    p.add_argument("--workers", type=int, help="local Dask worker processes (default: all cores)")
    p.add_argument("--scheduler", help="address of a running dask.distributed scheduler, "
                   "or 'synchronous' to run in this process")
    p.add_argument("--partition-bytes", type=parse_size,
                   help="approximate JSON bytes per partition (default 32MiB)")
    p.add_argument("--strict", action="store_true", default=None,
                   help="stop at the first bad record (exit 2) instead of counting and skipping it")
    p.add_argument("--keep-work", action="store_true", help="keep intermediate stage files")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a different build already in --output")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def _build_config(args) -> BuildConfig:
    cfg = load_toml(args.config) if args.config else BuildConfig()
    overrides = {
        ("read", "inputs"): args.input, ("read", "partition_bytes"): args.partition_bytes,
        ("read", "strict"): args.strict, ("tokenize", "tokenizer"): args.tokenizer,
        ("pack", "output"): args.output, ("pack", "name"): args.name,
        ("cluster", "workers"): args.workers, ("cluster", "scheduler"): args.scheduler,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    cfg.quiet, cfg.keep_work = args.quiet, args.keep_work
    return cfg


def cmd_build(args) -> int:
    from .pipeline import build

    report = build(_build_config(args), overwrite=args.overwrite)
    return 0 if report else 1


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write realistic synthetic Pile-format shards")
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--megabytes", type=float, default=2.0, help="approximate size of each shard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plain", action="store_true", help="write .jsonl instead of .jsonl.zst")


def cmd_synth(args) -> int:
    from .synth import SynthConfig, generate

    truth = generate(SynthConfig(Path(args.output), args.shards, args.megabytes, args.seed,
                                 compress=not args.plain))
    lines = sum(s["lines"] for s in truth["shards"])
    print(f"wrote {args.shards} shards ({lines} lines, {len(truth['exact'])} exact and "
          f"{len(truth['near'])} near duplicates planted) to {args.output}")
    return 0


COMMANDS = {"build": cmd_build, "synth": cmd_synth}


def main(argv: list[str] | None = None) -> int:
    from .indexed import FormatError
    from .ingest import BadRecordError
    from .reader import InputError
    from .report import AccountingError

    parser = argparse.ArgumentParser(prog="pileprep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_build(sub)
    _add_synth(sub)
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, InputError, BadRecordError, FormatError) as exc:
        print(f"pileprep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except AccountingError as exc:
        print(f"pileprep {args.command}: internal error: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"pileprep {args.command}: error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pileprep {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
