"""A/B of the fast engine: two commits, or memo settings, on the same text, runs alternated.

On a shared machine wall time drifts with the load; alternating the variants and timing CPU
seconds of this process keeps the comparison fair. Each run encodes the corpus' first
``--megabytes`` with a fresh encoder (so its memo fills during the run, as in a build).

    python benchmarks/engine_ab.py --corpus bench-out/realtext --rev 6562753          # that commit vs the tree
    python benchmarks/engine_ab.py --corpus bench-out/realtext --config "{'hot_size': 1}" --config "{}"

``--rev`` checks the commit out in a temporary git worktree and runs it in its own process.
A ``--config`` sets attributes of the memo (:class:`pileprep.tokenizer.wordcache.WordCache`)
before the run, e.g. ``max_entries``, ``keep``, ``hot_size``.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(corpus: str, megabytes: float, config: dict) -> float:
    """MB of text per CPU second of one fresh encoder over the corpus' first megabytes."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dedup import texts_of
    from pileprep.core.config import default_tokenizer
    from pileprep.tokenizer import fastbpe, load_tokenizer

    texts = texts_of(Path(corpus), int(megabytes * 1e6))
    nbytes = sum(len(t.encode()) for t in texts)
    ref = load_tokenizer(default_tokenizer())
    enc = fastbpe.FastEncoder(json.loads(ref.to_str()), ref)
    for key, value in config.items():
        setattr(enc.cache, key, value)
    enc.cache._empty()
    enc.encode_batch(texts[:20])  # compiled code loaded before the clock starts
    start = time.process_time()
    for i in range(0, len(texts), 512):
        enc.encode_batch(texts[i:i + 512], 0, np.uint16)
    return nbytes / (time.process_time() - start) / 1e6


def in_process(src: Path, corpus: str, megabytes: float, config: dict) -> float:
    """:func:`run_once` in a new Python process importing pileprep from ``src``."""
    code = (f"import sys; sys.path.insert(0, {str(src)!r}); sys.path.insert(1, {str(ROOT)!r})\n"
            f"sys.path.insert(2, {str(ROOT / 'benchmarks')!r})\n"
            "from engine_ab import run_once\n"
            f"print(run_once({corpus!r}, {megabytes!r}, {config!r}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True, help="Pile-format shards (benchmarks/realtext.py)")
    ap.add_argument("--megabytes", type=float, default=150)
    ap.add_argument("--rev", help="a commit to compare with the working tree")
    ap.add_argument("--config", action="append", default=[], help="memo settings, a dict")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    variants: list[tuple[str, Path, dict]] = []
    tmp = None
    if args.rev:
        tmp = tempfile.mkdtemp(prefix="engine-ab-")
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", tmp, args.rev],
                       check=True)
        variants.append((args.rev, Path(tmp), {}))
    variants += [(f"tree {c}", ROOT, ast.literal_eval(c)) for c in args.config or ["{}"]]
    rates: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    try:
        for _ in range(args.rounds):
            for name, src, config in variants:
                rates[name].append(in_process(src, args.corpus, args.megabytes, config))
    finally:
        if tmp:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tmp])
    print(f"first {args.megabytes:g} MB of {args.corpus}, MB of text per CPU second, "
          f"{args.rounds} alternated rounds:")
    for name, values in rates.items():
        print(f"  {name:<40} " + "  ".join(f"{v:6.2f}" for v in values))


if __name__ == "__main__":
    main()
