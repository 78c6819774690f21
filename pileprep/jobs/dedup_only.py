"""The dedup job (``pileprep dedup``): ingest and find near-duplicates only, no tokens.

It writes ``duplicates.parquet``, ``dedup.json`` and the Markdown report; removal is counted
in documents and text bytes. Its signatures are the build's, so either reuses the other's. In a
directory that holds a build, its files go to ``dedup-<threshold>/`` there: the build's own
table and report (named in its manifest) stay as the build wrote them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from pileprep.core.config import BuildConfig
from pileprep.core.files import DEDUP_SUMMARY, MANIFEST
from pileprep.core.outdir import OutputDir
from pileprep.core import atomic
from pileprep.runner import prefork
from pileprep.runner.dask_runner import Runner
from pileprep.sources import discover
from pileprep.stages.graph import run_ingest_and_tokenize, work_dirs


def dedup_only(cfg: BuildConfig) -> dict:
    """The dedup summary (also written, with the table and report, to :func:`folder`)."""
    from pileprep.dedup import apply, minhash, report as dedup_report
    from pileprep.stages import dedup as dedup_stage

    cfg = dataclasses.replace(cfg, dedup=dataclasses.replace(cfg.dedup, enabled=True))
    cfg.validate()
    minhash.banding(cfg.dedup)  # a banding the LSH cannot make is a setting error, now
    prefork.start_for(cfg, tokenize=False)
    shards = discover(cfg.read.inputs)
    with OutputDir(cfg.pack.output, "dedup", cfg.quiet) as out:
        ingest_fp, ingest_dir, tokens_dir = work_dirs(out.path, cfg, {})
        sig_dir = dedup_stage.signatures_for(out.path, ingest_fp, cfg.dedup)
        with Runner(cfg.cluster, cfg.quiet) as runner:
            shard_results, _ = run_ingest_and_tokenize(runner, shards, ingest_dir, tokens_dir,
                                                       cfg, None, sig_dir)
            dup = dedup_stage.run(runner, shard_results, out.path, ingest_fp, cfg.dedup,
                                  cfg.keep_work)
        kept = apply.subset_counts(dup.signature_paths, dup.removed, dup.offsets)
        dup.removed_by_subset = {n: [v["removed"], 0, 0] for n, v in kept.items()}
        summary = dedup_report.summary(dup, {n: {"documents": v["kept"]} for n, v in kept.items()})
        summary["tokens_counted"] = False
        summary["lines_read"] = sum(s.lines_read for s in shard_results)
        summary["rejected_total"] = sum(sum(s.rejected.values()) for s in shard_results)
        with contextlib.ExitStack() as stack:
            target = folder(cfg)  # a build's directory: its own files stay its own
            dest = out if target == out.path else stack.enter_context(
                OutputDir(target, "dedup", cfg.quiet))
            stage = dest.stage()
            dedup_stage.write_outputs(stage, dup, summary)
            atomic.write_json(stage / DEDUP_SUMMARY, summary)
            dest.commit(stage, None)
        out.clean(cfg.keep_work)
    return summary


def folder(cfg: BuildConfig) -> Path:
    """Where ``pileprep dedup`` writes its files: the output directory, or its
    ``dedup-<threshold>/`` when it holds a build."""
    out = Path(cfg.pack.output)
    built = (out / MANIFEST).exists()
    return out / f"dedup-{cfg.dedup.threshold:g}" if built else out
