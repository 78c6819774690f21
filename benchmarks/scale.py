"""Scale benchmark: a build of N GB of real, high-diversity text, plain and with ``--dedup``.

For each build (``pileprep build --workers W``, in a subprocess) it prints the wall time, the
per-stage rates from ``report.json``, the peak RSS of the driver and of each worker (sampled
every 50 ms), the CPU seconds of all its processes, and the peak disk under OUT (``du``
sampled every 0.5 s) against the final outputs. On the same corpus, in the same run, it
measures the fast engine alone on one core and GPT-NeoX's way (``preprocess_data.py``: one
``encode`` per document, one process per core) in MB per CPU second, so that other users of a
shared machine slow the build's wall time but not the baselines: the ratios are conservative. Then the queries on the deduplicated build
(``schedule`` with Pythia's settings first, then ``verify``, ``batch-at``, ``where --doc``,
``seen``) with their time and peak RSS, and the
projection for the Pile (825 GiB of text) on one 64-core node and on 10 such nodes.

The corpus is ``benchmarks/realtext.py``'s (built into ``--corpus`` when missing). A machine
holds only so much distinct real text (about 1.1 GB here); when N is more, the benchmark says
so and uses what exists, or with ``--repeat`` repeats shards under new names to reach N (a
repeated shard is all near-duplicates, which changes what ``--dedup`` removes).

    python benchmarks/scale.py [--gigabytes 2 | --megabytes 500] [--corpus /tmp/realtext]
                               [--workdir bench-out/scale] [--workers 2] [--repeat]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from dedup import PILE_TEXT_BYTES, texts_of  # noqa: E402
from engines import _fast_share, _neox_share, pool_rate  # noqa: E402
from memory import machine, run_sampled  # noqa: E402

from pileprep.core.config import default_tokenizer

TARGET_ENGINE_SHARE = 0.60  # end to end >= 60 % of (engine rate x cores)
TARGET_VS_NEOX = 8.0  # >= 8x GPT-NeoX preprocess_data.py at equal cores
TARGET_SCRATCH = 1.5  # peak bytes under OUT <= 1.5x the final outputs
NODE_CORES, NODES = 64, 10
NEOX_SAMPLE = 40_000_000  # GPT-NeoX's way runs at ~1 MB/s per core: time it on 40 MB
PILE_SHARDS = 30
MB = 1e6


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def disk_usage(path: Path) -> int:
    """Bytes allocated under ``path`` as ``du`` counts them (hard links once), 0 when it does
    not exist. Walked here, not by running ``du``: the build must be the benchmark's only
    child while it runs (memory.run_sampled counts its CPU time by reaping), and a walk costs
    less than a process every half second."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    seen, total = {(st.st_dev, st.st_ino)}, st.st_blocks * 512
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:  # deleted meanwhile
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


class DiskSampler:
    """The largest ``du`` of a directory while a command runs, sampled in a thread."""

    def __init__(self, path: Path, every: float = 0.5):
        self.path, self.every, self.peak = path, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, disk_usage(self.path))
            self._stop.wait(self.every)

    def __enter__(self) -> "DiskSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def corpus(args) -> tuple[Path, str]:
    """The shards to build, and a note when they are fewer bytes than asked for."""
    src = Path(args.corpus)
    want = args.megabytes * MB
    if not any(src.glob("*.jsonl.zst")):
        subprocess.run([sys.executable, str(Path(__file__).parent / "realtext.py"), "--out",
                        str(src), "--megabytes", str(args.megabytes), "--shards", "8"], check=True)
    shards = sorted(src.glob("*.jsonl.zst"))
    have = text_bytes(src)
    if have >= want * 0.98:
        return src, ""
    note = (f"this machine holds only {have / MB:,.0f} MB of distinct real text "
            f"({len(shards)} shards), less than the {want / MB:,.0f} MB asked for")
    if not args.repeat:
        return src, note + ": building what exists"
    dst = Path(args.workdir) / "corpus-repeated"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    copies = int(-(-want // have))
    for c in range(copies):
        for s in shards:
            os.symlink(s.resolve(), dst / f"{c:02d}-{s.name}")
    return dst, note + f": each shard repeated {copies}x under new names (all near-duplicates)"


def text_bytes(src: Path) -> int:
    """UTF-8 bytes of the corpus' text, from realtext.py's summary or by reading it."""
    import orjson
    import zstandard

    total = 0
    for path in sorted(src.glob("*.jsonl.zst")):
        with open(path, "rb") as f:
            for line in zstandard.ZstdDecompressor().stream_reader(f).read().splitlines():
                total += len(orjson.loads(line)["text"].encode())
    return total


def cpu_rate(spec: str, src: Path, limit: int, way: str) -> float:
    """Bytes of text per CPU second of one process encoding ``src`` (up to ``limit`` bytes):
    ``fast`` is pileprep's engine in batches of 512, ``neox`` one ``encode`` per document. CPU
    time, not wall: on a shared machine the wall time also counts other users' processes. The
    thread's CPU time, not the process's: both encode in the calling thread, and this process
    may have other threads (readers, samplers) whose time is not the engine's."""
    import numpy as np

    texts = texts_of(src, limit)
    nbytes = sum(len(t.encode()) for t in texts)
    if way == "fast":
        from pileprep.tokenizer.fast import fast_encoder

        enc = fast_encoder(spec)
        enc.encode_batch(texts[:20])  # tables and compiled code loaded, as in a warm worker
        start = time.thread_time()
        for i in range(0, len(texts), 512):
            enc.encode_batch(texts[i:i + 512], 0, np.uint16)
    else:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        from pileprep.tokenizer import load_tokenizer

        tok = load_tokenizer(spec)
        start = time.thread_time()
        for text in texts:
            tok.encode(text)
    return nbytes / (time.thread_time() - start)


def build(shards: Path, out: Path, workers: int, extra: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    args = ["build", "--input", str(shards), "--output", str(out), "--workers", str(workers),
            "--quiet", *extra]
    before = load()
    with DiskSampler(out) as disk:
        # cpu: the driver, fork server and workers: every process of the build
        by_pid: dict[int, tuple[str, float]] = {}
        elapsed, peaks, cpu = run_sampled(args, cpu_by_pid=by_pid)
    report = json.loads((out / "report.json").read_text())
    final = disk_usage(out)
    inodes = {p.stat().st_ino: p.stat().st_size for p in out.iterdir() if p.is_file()}
    dataset = sum(inodes.values())  # hard-linked names once
    return {"elapsed": elapsed, "peaks": peaks, "cpu_by_pid": by_pid, "report": report,
            "peak_disk": disk.peak,
            "final_disk": final, "dataset_bytes": dataset, "load": f"{before} -> {load()}",
            "args": args, "cpu": cpu}


def rss_line(peaks: dict) -> str:
    def top(role: str) -> float:
        return max((p for label, p in peaks.values() if label == role), default=0) / (1 << 20)

    workers = sorted((p for label, p in peaks.values() if label == "worker" and p > 50 << 20),
                     reverse=True)
    return (f"peak RSS: driver {top('driver'):,.0f} MiB, fork server {top('server'):,.0f} MiB, "
            "workers " + ", ".join(f"{w / (1 << 20):,.0f}" for w in workers) + " MiB")


def cpu_line(by_pid: dict[int, tuple[str, float]]) -> str:
    """Each process's CPU seconds, driver first, then the fork server, then the workers."""
    roles = ("driver", "server", "worker")
    rows = sorted(by_pid.values(), key=lambda r: roles.index(r[0]) if r[0] in roles else 3)
    return "CPU by process (sampled every 50 ms): " + ", ".join(
        f"{label} {seconds:.1f} s" for label, seconds in rows if seconds >= 0.05)


def print_build(name: str, run: dict, engine_mbs: float, neox_mbs: float, workers: int) -> dict:
    rep = run["report"]
    removed = rep.get("dedup", {}).get("by_subset", {}).values()
    text = rep["text_bytes"] + sum(v["bytes"] for v in removed)  # all text read, kept or not
    timings = rep["timings_seconds"]
    e2e = text / run["elapsed"] / MB  # the whole command, as a user waits for it
    share = e2e / (engine_mbs * workers)
    ratio = run["peak_disk"] / run["final_disk"]
    print(f"\n== {name}: {' '.join(run['args'])}")
    print(f"   {run['load']}")
    print(f"   wall {run['elapsed']:.1f} s (process), stages {timings}")
    print(f"   {rep['kept']:,} documents, {rep['tokens']:,} tokens, {text / MB:,.0f} MB of text, "
          f"{rep['duplicates']:,} duplicates removed")
    for stage, r in rep.get("rates", {}).items():
        per_core = (f", {r['MB_per_s_per_core']} MB/s per busy core ({r['task_cpu_seconds']} "
                    "CPU s of tasks)"
                    if r.get("MB_per_s_per_core") else "")
        print(f"   rate {stage:10s} {r['bytes'] / MB:9,.1f} MB in {r['wall_seconds']:7.1f} s = "
              f"{r['MB_per_s']} MB/s{per_core}")
    print(f"   end to end (the command's wall time) {e2e:.2f} MB/s of text = {share:.0%} of the "
          f"engine x {workers} cores ({engine_mbs * workers:.2f} MB/s); "
          f"{e2e / neox_mbs:.1f}x GPT-NeoX's way on {workers} cores ({neox_mbs:.2f} MB/s)")
    busy = sum(r.get("task_cpu_seconds", 0) for r in rep.get("rates", {}).values())
    engine_cpu = text / MB / engine_mbs
    print(f"   CPU: {run['cpu']:.1f} s in all the build's processes ({busy:.1f} s in tasks) of the "
          f"{run['elapsed'] * workers:.1f} core-seconds the wall time offered; the engine's own "
          f"work is {engine_cpu:.1f} s of it = {engine_cpu / run['cpu']:.0%} (the ratio above, "
          "had the build had the cores to itself and kept them busy)")
    print(f"   {rss_line(run['peaks'])}")
    print(f"   {cpu_line(run['cpu_by_pid'])}")
    print(f"   disk under OUT: peak {run['peak_disk'] / MB:,.0f} MB, final {run['final_disk'] / MB:,.0f}"
          f" MB (dataset files {run['dataset_bytes'] / MB:,.0f} MB): peak = {ratio:.2f}x final")
    return {"cpu": run["cpu"], "e2e": e2e, "share": share, "vs_neox": e2e / neox_mbs, "scratch": ratio,
            "out_per_text": run["final_disk"] / text, "busy": rep.get("rates", {}),
            "timings": timings, "text": text}


def some_document(out: Path) -> str:
    """``SOURCE:LINE`` of the document in the middle of the dataset."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(out / "provenance.parquet")
    group = pf.read_row_group(pf.num_row_groups // 2, columns=["source", "line"])
    row = group.num_rows // 2
    return f"{group.column('source')[row].as_py()}:{group.column('line')[row].as_py()}"


def queries(out: Path) -> list[str]:
    elapsed, peaks, _ = run_sampled(["schedule", str(out), "--quiet"], quiet_output=True)
    lines = [f"   {'schedule (Pythia: 143,000 steps x 1024 x 2049)':32s} {elapsed:6.2f} s  "
             f"peak RSS {max(p for _, p in peaks.values()) / (1 << 20):,.0f} MiB   ({load()})"]
    for args in (["verify", str(out)], ["batch-at", str(out), "--step", "3000"],
                 ["where", str(out), "--doc", some_document(out)],
                 ["seen", str(out), "--steps", "3000:3256"]):
        elapsed, peaks, _ = run_sampled(args, quiet_output=True)
        peak = max(p for _, p in peaks.values())
        lines.append(f"   {' '.join(args[:1] + args[2:]):32s} {elapsed:6.2f} s  "
                     f"peak RSS {peak / (1 << 20):,.0f} MiB   ({load()})")
    return lines


def projection(result: dict, workers: int) -> list[str]:
    """The Pile on one node and on ten, from this build's per-core rates: compute-bound time
    (text / (end-to-end rate per core x cores)) or, when longer, the time to read the largest
    shard on one core (a zstd shard is one stream, read in order by one task)."""
    per_core = result["e2e"] / workers * MB
    busy = result["busy"]
    ingest = busy.get("ingest", {})
    read_per_core = (result["text"] / ingest["task_cpu_seconds"]) if ingest.get("task_cpu_seconds") else 0
    shard_read = (PILE_TEXT_BYTES / PILE_SHARDS) / read_per_core if read_per_core else 0
    per_cpu = result["text"] / result["cpu"]  # text per CPU second of all the build's processes
    lines = []
    for label, cores in ((f"one {NODE_CORES}-core node", NODE_CORES),
                         (f"{NODES} nodes x {NODE_CORES} cores", NODES * NODE_CORES)):
        compute = PILE_TEXT_BYTES / (per_core * cores)
        dedicated = PILE_TEXT_BYTES / (per_cpu * cores)
        total = max(compute, shard_read)
        bound = "reading the largest shard" if shard_read > compute else "compute"
        lines.append(f"   {label}: {total / 3600:.2f} h at this run's wall rate per core ({bound}-"
                     f"bound; one shard read {shard_read / 3600:.2f} h); "
                     f"{max(dedicated, shard_read) / 3600:.2f} h at its CPU cost with every core busy")
    out = PILE_TEXT_BYTES * result["out_per_text"]
    lines.append(f"   outputs ~{out / (1 << 30):,.0f} GiB; peak disk under OUT at this build's ratio "
                 f"{result['scratch']:.2f}x: ~{out * result['scratch'] / (1 << 30):,.0f} GiB")
    return lines


def verdict(name: str, ok: bool, figure: str) -> str:
    return f"   {name}: {'met' if ok else 'NOT met'} ({figure})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gigabytes", type=float, default=2.0)
    ap.add_argument("--megabytes", type=float, help="instead of --gigabytes")
    ap.add_argument("--corpus", default="/tmp/realtext", help="realtext.py shards (built if missing)")
    ap.add_argument("--workdir", default="bench-out/scale")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", action="store_true", help="repeat shards to reach the size asked")
    ap.add_argument("--neox-wall", action="store_true",
                    help="also time GPT-NeoX's way on the whole shard with one process per core")
    args = ap.parse_args()
    args.megabytes = args.megabytes or args.gigabytes * 1000
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    spec = default_tokenizer()
    print(f"machine: {machine()}; {load()}")
    shards, note = corpus(args)
    if note:
        print(f"note: {note}")

    sample = sorted(shards.glob("*.jsonl.zst"))[0]
    sample_dir = work / "engine-sample"
    shutil.rmtree(sample_dir, ignore_errors=True)
    sample_dir.mkdir()
    os.symlink(sample.resolve(), sample_dir / sample.name)
    nbytes = text_bytes(sample_dir)
    engine_cpu = cpu_rate(spec, sample_dir, 1 << 62, "fast")
    engine, _, _ = pool_rate(spec, sample_dir, nbytes, 1, _fast_share)
    print(f"fast engine, 1 core, shard {sample.name} ({nbytes / MB:.0f} MB): "
          f"{engine_cpu / MB:.2f} MB per CPU second; {engine / MB:.2f} MB/s wall ({load()})")
    neox_cpu = cpu_rate(spec, sample_dir, NEOX_SAMPLE, "neox")
    neox, _, _ = pool_rate(spec, sample_dir, nbytes, args.workers, _neox_share) if args.neox_wall \
        else (0.0, 0, 0)
    print(f"GPT-NeoX's way (encode per document), first {NEOX_SAMPLE / MB:.0f} MB of the shard: "
          f"{neox_cpu / MB:.2f} MB per CPU second, so {neox_cpu * args.workers / MB:.2f} MB/s on "
          f"{args.workers} cores" + (f"; {neox / MB:.2f} MB/s wall with {args.workers} processes"
                                     if neox else "") + f" ({load()})")
    # The ratios use CPU-second rates for the baselines (what a core does when it is not shared)
    # and the build's wall time (which any other load on the machine slows): conservative.
    engine, neox = engine_cpu, neox_cpu * args.workers

    plain = build(shards, work / "plain", args.workers, ["--no-schedule"])
    p = print_build("plain", plain, engine / MB, neox / MB, args.workers)
    dedup = build(shards, work / "dedup", args.workers, ["--dedup", "--no-schedule"])
    d = print_build("--dedup", dedup, engine / MB, neox / MB, args.workers)
    print("\n== the training schedule, then queries, on the --dedup build")
    for line in queries(work / "dedup"):
        print(line)
    print("\n== the Pile (825 GiB of text), at the plain build's rates")
    for line in projection(p, args.workers):
        print(line)
    print("\n== targets")
    print(verdict("end to end >= 60% of engine x cores (plain)", p["share"] >= TARGET_ENGINE_SHARE,
                  f"{p['share']:.0%}"))
    print(verdict(">= 8x GPT-NeoX at equal cores (plain)", p["vs_neox"] >= TARGET_VS_NEOX,
                  f"{p['vs_neox']:.1f}x"))
    for name, r in (("plain", p), ("--dedup", d)):
        print(verdict(f"peak scratch <= 1.5x outputs ({name})", r["scratch"] <= TARGET_SCRATCH,
                      f"{r['scratch']:.2f}x"))


if __name__ == "__main__":
    main()
