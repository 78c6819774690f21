"""Memory benchmark: peak RSS of every process of a 2-worker build, at two input sizes.

Runs ``pileprep build --workers 2 --no-schedule`` on generated corpora of about 20 MB and 200 MB of text,
sampling the RSS of the driver and every descendant (Dask nannies and workers) every 50 ms.
Prints the peak of each process, the largest peak, and the ratio between the two sizes: a
streaming build's memory must not grow with the input.

    python benchmarks/memory.py [--small 20] [--large 200] [--workdir bench-out/memory]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from pileprep.sources.synth import SynthConfig, generate

GIB = 1 << 30


def machine() -> str:
    """The machine line every benchmark prints first."""
    return (f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / GIB:.1f} GiB RAM, Python {platform.python_version()}")


def corpus(workdir: Path, megabytes: float, shards: int) -> Path:
    out = workdir / f"shards-{megabytes:g}MB"
    if not (out / "truth.json").exists():
        generate(SynthConfig(out, shards=shards, megabytes=megabytes / shards, seed=42))
    return out


def _label(proc: psutil.Process, root_pid: int) -> str:
    try:
        cmd = " ".join(proc.cmdline())
        parent = proc.ppid()
    except psutil.Error:
        return "?"
    if proc.pid == root_pid:
        return "driver"
    if "forkserver import main" in cmd and parent == root_pid:
        return "server"  # the fork server workers are forked from (pileprep.runner.prefork)
    if "spawn_main" in cmd or "multiprocessing" in cmd:
        return "worker"
    return "other"


def measure(shards: Path, out: Path, workers: int, extra: tuple[str, ...] = (),
            prelude: str = "") -> dict:
    """Run one build in a subprocess; its wall time, text size and per-process peak RSS.
    ``prelude``: Python run in that subprocess before the build (to alter one setting)."""
    args = ["build", "--input", str(shards), "--output", str(out), "--workers", str(workers),
            "--quiet", "--overwrite", "--no-schedule", *extra]
    elapsed, peaks, _ = run_sampled(args, prelude)
    report = json.loads((out / "report.json").read_text())
    return {"elapsed": elapsed, "text_mb": report["text_bytes"] / 1e6, "peaks": peaks,
            "report": report}


def adopt_orphans() -> bool:
    """Make this process the reaper of its descendants' orphans (Linux ``PR_SET_CHILD_SUBREAPER``):
    a build's fork server outlives its driver by a moment, and its workers are its children,
    not the driver's; reaped here, their CPU time counts in ``RUSAGE_CHILDREN``."""
    try:
        return ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError, TypeError):
        return False


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _reap_all(timeout: float = 60.0) -> None:
    """Wait for every remaining child (orphans adopted during the command) to exit."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.02)


def run_sampled(args: list[str], prelude: str = "", quiet_output: bool = False,
                cpu_by_pid: dict[int, tuple[str, float]] | None = None
                ) -> tuple[float, dict[int, tuple[str, int]], float]:
    """Run ``pileprep ARGS`` in a subprocess, sampling the RSS of it and every descendant every
    50 ms; return the wall time, ``{pid: (label, peak RSS)}`` and the CPU seconds of all of
    them: exact from ``RUSAGE_CHILDREN`` where this process can adopt the orphans
    (:func:`adopt_orphans`; the command must be this process's only child meanwhile), else
    each process's last sample. A command that exits 1 (verify reporting problems) counts as
    run; ``quiet_output`` drops its standard output. ``cpu_by_pid`` receives each process's
    label and last sampled CPU seconds."""
    cmd = ([sys.executable, "-c", f"{prelude}\nimport sys\nfrom pileprep.cli import main\n"
            f"sys.exit(main({args!r}))"] if prelude else
           [sys.executable, "-m", "pileprep.cli", *args])
    exact = adopt_orphans()
    cpu0 = children_cpu()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL if quiet_output else None)
    root = psutil.Process(proc.pid)
    peaks: dict[int, tuple[str, int]] = {}
    cpu: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    times = p.cpu_times()
                except psutil.Error:
                    continue
                cpu[p.pid] = times.user + times.system
                label, best = peaks.get(p.pid, (_label(p, root.pid), 0))
                peaks[p.pid] = (label, max(best, rss))
            stop.wait(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    code = proc.wait()
    elapsed = time.monotonic() - start
    stop.set()
    t.join()
    if exact:
        _reap_all()
    if cpu_by_pid is not None:
        cpu_by_pid.update({pid: (peaks[pid][0], c) for pid, c in cpu.items()})
    if code not in (0, 1):
        raise SystemExit(f"pileprep {args[0]} failed with exit code {code}")
    return elapsed, peaks, (children_cpu() - cpu0) if exact else sum(cpu.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=float, default=20)
    ap.add_argument("--middle", type=float, default=100)
    ap.add_argument("--large", type=float, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", default="bench-out/memory")
    ap.add_argument("--tokenizer-engine", default="auto")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}; tokenizer engine {args.tokenizer_engine}")
    results = {}
    for mb, shards in [(args.small, 2), (args.middle, 3), (args.large, 4)]:
        src = corpus(work, mb, shards)
        r = measure(src, work / f"out-{mb:g}MB", args.workers,
                    ("--tokenizer-engine", args.tokenizer_engine))
        results[mb] = r
        print(f"\n{r['text_mb']:.1f} MB of text, {args.workers} workers: {r['elapsed']:.1f} s "
              f"({r['text_mb'] / r['elapsed']:.2f} MB/s)")
        for pid, (label, peak) in sorted(r["peaks"].items(), key=lambda kv: -kv[1][1]):
            if peak > 20 * 1 << 20:
                print(f"  pid {pid:>7} {label:<7} peak RSS {peak / (1 << 20):7.1f} MiB")
    for mb in (args.small, args.middle, args.large):
        peak = max(p for _, p in results[mb]["peaks"].values())
        print(f"{mb:g} MB: largest per-process peak {peak / (1 << 20):.1f} MiB")
    small = max(p for _, p in results[args.small]["peaks"].values())
    large = max(p for _, p in results[args.large]["peaks"].values())
    print(f"\nlargest per-process peak: {small / (1 << 20):.1f} MiB at {args.small:g} MB, "
          f"{large / (1 << 20):.1f} MiB at {args.large:g} MB; ratio {large / small:.3f}")
    print(f"under 1 GiB: {'yes' if large < GIB else 'NO'}; "
          f"growth from {args.small:g} MB to {args.large:g} MB: {100 * (large / small - 1):+.1f} %")


if __name__ == "__main__":
    main()
