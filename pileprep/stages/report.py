"""The build report (what happened to every input line) and the manifest (what was built from what).

``report.json`` accounts for every line read: ``lines_read = kept + duplicates + sum(rejected)``.
The build refuses to finish when that identity does not hold, because a silent loss of lines is
the one failure a data pipeline must never have.

``manifest.json`` names the inputs (name, size, sha256), the settings, the tokenizer, the
pileprep version and the sha256 of every output. It holds no time stamps, so two builds of the
same inputs with the same settings write the same manifest.
"""

from __future__ import annotations

from typing import Sequence

from pileprep.core.errors import AccountingError, PilePrepError
from pileprep.core.files import REJECTS
from pileprep.formats.parts import ShardResult, TokenPart
from pileprep.formats.report import accounting_gap


def _add_counts(total: dict[str, int], more: dict[str, int]) -> None:
    for key, n in more.items():
        total[key] = total.get(key, 0) + n


def sum_subsets(tables) -> dict[str, list[int]]:
    """Add up ``{pile_set_name: [documents, tokens, bytes]}`` tables."""
    out: dict[str, list[int]] = {}
    for table in tables:
        for name, vals in table.items():
            acc = out.setdefault(name, [0, 0, 0])
            for i, v in enumerate(vals):
                acc[i] += v
    return out


def subset_table(parts: Sequence[TokenPart]) -> dict[str, dict[str, int]]:
    out = sum_subsets(p.subsets for p in parts)
    return {name: {"documents": d, "tokens": t, "bytes": b} for name, (d, t, b) in sorted(out.items())}


def make_report(shards: Sequence[ShardResult], parts: Sequence[TokenPart],
                duplicates: int = 0, timings: dict | None = None) -> dict:
    rejected: dict[str, int] = {}
    for s in shards:
        _add_counts(rejected, s.rejected)
    report = {
        "lines_read": sum(s.lines_read for s in shards),
        "kept": sum(p.docs for p in parts),
        "duplicates": duplicates,
        "rejected": dict(sorted(rejected.items())),
        "rejected_total": sum(rejected.values()),
        "tokens": sum(p.tokens for p in parts),
        "text_bytes": sum(p.text_bytes for p in parts),
        "shards": [{"source": s.source, "lines_read": s.lines_read, "kept": kept,
                    "duplicates": s.accepted - kept, "rejected": s.rejected,
                    "error": s.shard_error} for s, kept in zip(shards, _kept_by_shard(shards, parts))],
        "shard_errors": [{"source": s.source, **s.shard_error} for s in shards if s.shard_error],
        "empty_shards": [s.source for s in shards if s.lines_read == 0],
        "subsets": subset_table(parts),
        "rejects_file": REJECTS,
        "timings_seconds": timings or {},
    }
    check_accounting(report)
    return report


def _kept_by_shard(shards: Sequence[ShardResult], parts: Sequence[TokenPart]) -> list[int]:
    """Documents kept of each shard: its partitions' parts as packed (in order, one each)."""
    if len(parts) != sum(len(s.partitions) for s in shards):  # a driver bug
        raise PilePrepError(f"report: {len(parts)} parts for "
                            f"{sum(len(s.partitions) for s in shards)} partitions")
    out, at = [], 0
    for s in shards:
        out.append(sum(p.docs for p in parts[at:at + len(s.partitions)]))
        at += len(s.partitions)
    return out


def stage_rates(shards: Sequence[ShardResult], timings: dict, busy: dict[str, float],
                bin_bytes: int) -> dict:
    """Bytes per second of each stage: over the wall time of its phase (ingest and tokenize
    overlap, so they share one), and per CPU second of its tasks (per busy core)."""
    read = sum(s.size for s in shards)  # the input files as stored (compressed)
    lines = sum(p.text_bytes for s in shards for p in s.partitions)  # accepted JSON lines
    phase = timings.get("ingest_and_tokenize", 0.0)

    def rate(nbytes: int, wall: float, task_seconds: float | None = None) -> dict:
        out = {"bytes": nbytes, "wall_seconds": round(wall, 3),
               "MB_per_s": round(nbytes / wall / 1e6, 2) if wall else None}
        if task_seconds is not None:
            out["task_cpu_seconds"] = round(task_seconds, 3)
            out["MB_per_s_per_core"] = round(nbytes / task_seconds / 1e6, 2) if task_seconds else None
        return out

    rates = {"ingest": rate(read, phase, busy.get("ingest", 0.0)),
             "tokenize": rate(lines, phase, busy.get("tokenize", 0.0))}
    if "dedup" in timings:
        rates["dedup"] = rate(lines, phase + timings["dedup"], busy.get("dedup", 0.0))
    rates["pack"] = rate(bin_bytes, timings.get("pack", 0.0) + timings.get("drop_duplicates", 0.0))
    rates["end_to_end"] = rate(lines, sum(timings.values()))
    return rates


def check_accounting(report: dict) -> None:
    gap = accounting_gap(report)
    if gap:
        raise AccountingError(f"accounting failed: {gap}")


def done_line(rep: dict) -> str:
    """The build's last log line: what was kept, removed and rejected."""
    rejected = ", ".join(f"{k} {v}" for k, v in rep["rejected"].items()) or "none"
    return (f"done: {rep['kept']:,} documents, {rep['tokens']:,} tokens; "
            f"{rep['lines_read']:,} lines read, {rep['duplicates']:,} duplicates removed, "
            f"{rep['rejected_total']:,} rejected ({rejected})")


def shard_warnings(rep: dict) -> list[str]:
    """Lines for shards that ended early (their unread lines cannot be counted, so they are
    said on the console, even with --quiet, not only in report.json) or held no lines."""
    out = [f"warning: {err['source']} stopped after line {err['after_lines']:,}: "
           f"{err['reason']} ({err['detail']})" for err in rep.get("shard_errors", [])]
    broken = {err["source"] for err in rep.get("shard_errors", [])}
    empty = [name for name in rep.get("empty_shards", []) if name not in broken]
    if empty:
        out.append(f"note: {len(empty)} shard(s) held no lines: " + ", ".join(empty[:5])
                   + (" ..." if len(empty) > 5 else ""))
    return out
