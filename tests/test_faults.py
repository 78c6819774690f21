"""Faults where users run: a local cluster of 2 workers and a real `dask scheduler` + `dask
worker` processes on 127.0.0.1. Every fault is one line on stderr (no traceback), leaves no
half-written output, and a rerun of the same command resumes to the bytes of an undisturbed
build (docs/reliability.md has the table)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import re

from dask_cluster import RemoteCluster, set_worker_env
from pileprep.core import faults, outdir

pytestmark = pytest.mark.slow  # real clusters, kills and restarts: minutes

SCHEDULE = ["--seq-length", "64", "--batch-size", "4", "--train-iters", "30"]


def _cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """The command as a user runs it: its own process group, as a terminal's job."""
    return subprocess.run([sys.executable, "-m", "pileprep.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, start_new_session=True,
                          timeout=timeout)


def _popen(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pileprep.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})


def _build(corpus, out, *extra, dedup=True) -> list[str]:
    return ["build", "-i", str(corpus), "-o", str(out), "--partition-bytes", "20000", *SCHEDULE,
            *(["--dedup"] if dedup else []), *extra]


def _files(d: Path) -> dict[str, bytes]:
    """Output bytes, but report.json (timings); the GPT-NeoX fragment without its directory."""
    return {p.name: (p.read_text().replace(str(d), "OUT").encode() if p.name.startswith("gpt_neox_")
                     else p.read_bytes())
            for p in d.iterdir() if p.is_file() and p.name != "report.json"}


def _one_error_line(r: subprocess.CompletedProcess, command: str = "build") -> str:
    """The failed command's stderr holds no traceback and ends in its one error line."""
    assert "Traceback" not in r.stderr and "Exception" not in r.stderr, r.stderr[-3000:]
    errors = [l for l in r.stderr.splitlines() if l.startswith(f"pileprep {command}: ")]
    assert len(errors) == 1, r.stderr[-3000:]
    assert r.stderr.rstrip().endswith(errors[0])
    return errors[0]


def _no_outputs(out: Path) -> None:
    """Nothing half-written in OUT_DIR: no output, only work and staging files and MinHash
    signatures (which the rerun reuses or clears), and no lock left."""
    assert sorted(p.name for p in out.iterdir()
                  if not p.name.startswith(".pileprep-") and p.name != "minhash") == []
    assert not (out / outdir.LOCK_FILE).exists()


@pytest.fixture(scope="module")
def references(dirty_corpus, tmp_path_factory) -> dict[bool, Path]:
    """Undisturbed builds, plain and --dedup, on the synchronous scheduler."""
    refs = {}
    for dedup in (False, True):
        out = tmp_path_factory.mktemp(f"ref-{dedup}")
        r = _cli(*_build(dirty_corpus, out, "--scheduler", "synchronous", "--quiet", dedup=dedup))
        assert r.returncode == 0, r.stderr
        refs[dedup] = out
    return refs


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    cluster = RemoteCluster(tmp_path_factory.mktemp("remote"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture()
def remote_faults(remote):
    """Sets fault variables in the remote workers for one test, and clears them after."""
    names = []

    def arm(**variables):
        names.extend(variables)
        remote.run_on_workers(set_worker_env(**variables))

    yield arm
    remote.run_on_workers(set_worker_env(**{n: "" for n in names}))


RUNNERS = {"local": ["--workers", "2"], "remote": None}


def _where(runner: str, remote) -> list[str]:
    return RUNNERS[runner] or ["--scheduler", remote.address]


# --- a task's error ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def late_bad_corpus(tmp_path_factory) -> Path:
    """The first shard's bad record comes late, the second's first: a worker finds the
    second one long before the first, and the first must still be the one reported."""
    from pileprep.sources.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("late") / "shards"
    generate(SynthConfig(out, shards=2, megabytes=1.0, seed=3,
                         bad_lines=[(0, 150, b'{"text": "late'), (1, 0, b"[1]")]))
    return out


@pytest.mark.parametrize("where", ["--workers 1", "--workers 2", "--scheduler synchronous",
                                   "remote"])
def test_strict_reports_the_first_bad_record_in_one_line_on_every_runner(
        late_bad_corpus, remote, tmp_path, where):
    flags = ["--scheduler", remote.address] if where == "remote" else where.split()
    r = _cli(*_build(late_bad_corpus, tmp_path / "out", "--strict", *flags, dedup=False))
    assert r.returncode == 2
    line = _one_error_line(r)
    assert line.startswith("pileprep build: error: 00.jsonl.zst: line 150 (0-based): "
                           "invalid_json:"), line
    _no_outputs(tmp_path / "out")


@pytest.mark.parametrize("runner", ["local", "remote"])
@pytest.mark.parametrize("fault,expected", [
    ("tokenize:2=bug", r"error: tokenize \S+ failed: RuntimeError: fault point tokenize: .*"
                       r"\(PILEPREP_DEBUG=1 shows the traceback\)$"),
    ("ingest:2=enospc", r"error: ingest \S+ failed: OSError: \[Errno 28\] No space left on device"),
    ("pack=enospc", r"error: \S+/\.pileprep-staging/pile_0\.87_deduped_text_document\.idx: "
                    r"No space left on device$"),
])
def test_a_task_error_is_one_line_and_the_rerun_resumes(
        dirty_corpus, references, remote, remote_faults, tmp_path, runner, fault, expected):
    import re

    out = tmp_path / "out"
    args = _build(dirty_corpus, out, *_where(runner, remote))
    if runner == "remote":
        remote_faults(**{faults.FAIL_AT: fault})
    r = _cli(*args, env={faults.FAIL_AT: fault})
    assert r.returncode == 2
    assert re.search(expected, _one_error_line(r)), r.stderr[-2000:]
    _no_outputs(out)
    if runner == "remote":
        remote.run_on_workers(set_worker_env(**{faults.FAIL_AT: ""}))
    resumed = _cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "reusing" in resumed.stderr
    assert _files(out) == _files(references[True])


def test_debug_shows_where_a_task_failed_on_a_worker(dirty_corpus, tmp_path):
    r = _cli(*_build(dirty_corpus, tmp_path, "--workers", "2", dedup=False),
             env={faults.FAIL_AT: "tokenize:2=bug", "PILEPREP_DEBUG": "1"})
    assert r.returncode != 0
    assert "the traceback of tokenize" in r.stderr  # printed from the error's own text
    assert "pileprep/core/faults.py" in r.stderr  # the worker's own frames
    assert "TaskError: tokenize" in r.stderr


@pytest.mark.parametrize("runner", ["local", "remote"])
def test_disk_full_while_indexing_is_one_line_and_the_rerun_completes(
        references, remote, remote_faults, tmp_path, runner):
    out = tmp_path / "out"
    shutil.copytree(references[False], out)
    args = ["index", str(out), "--shard-tokens", "100000", *_where(runner, remote)]
    fault = "write:1=enospc"  # a worker's first atomic write: an index shard's suffix array
    if runner == "remote":
        remote_faults(**{faults.FAIL_AT: fault})
    r = _cli(*args, env={faults.FAIL_AT: fault})
    assert r.returncode == 2
    line = _one_error_line(r, "index")
    assert f"{out}/ngram/" in line and line.endswith(".sa: No space left on device"), line
    assert not (out / "ngram" / "index.json").exists()
    if runner == "remote":
        remote.run_on_workers(set_worker_env(**{faults.FAIL_AT: ""}))
    resumed = _cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "index: reusing" in resumed.stderr  # the shards written before the fault
    count = _cli("count", str(out), "--text", "the", "--output", str(tmp_path / "c.parquet"))
    assert count.returncode == 0, count.stderr


def _indexed_copy(build: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(build, out)
    assert _cli("index", str(out), "--scheduler", "synchronous").returncode == 0
    return out


def _fail_then_resume(args: list[str], fault: str, expected: str, runner, remote, remote_faults):
    """``args`` with ``fault`` in the driver and the workers: one error line matching
    ``expected``; then without it: done, reusing the tasks finished before the fault."""
    command = args[0]
    if runner == "remote":
        remote_faults(**{faults.FAIL_AT: fault})
    r = _cli(*args, env={faults.FAIL_AT: fault})
    assert r.returncode == 2
    assert re.search(expected, _one_error_line(r, command)), r.stderr[-2000:]
    if runner == "remote":
        remote.run_on_workers(set_worker_env(**{faults.FAIL_AT: ""}))
    again = _cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{command}: reusing" in again.stderr


@pytest.mark.parametrize("runner", ["local", "remote"])
def test_a_failed_task_of_a_streaming_count_is_one_line_and_the_rerun_counts(
        references, remote, remote_faults, tmp_path, runner):
    out = _indexed_copy(references[False], tmp_path)
    query = ["count", str(out), "--text", "the", "--ids", "0"]
    args = [*query, "--strategy", "stream", "--part-samples", "8", "--output",
            str(tmp_path / "c.parquet"), *_where(runner, remote)]
    _fail_then_resume(args, "count:3=bug", r"error: count-\d+ failed: RuntimeError: fault point count",
                      runner, remote, remote_faults)  # the rerun reuses the parts done before
    by_index = _cli(*query, "--strategy", "index", "--output", str(tmp_path / "i.parquet"))
    assert by_index.returncode == 0, by_index.stderr
    import pyarrow.parquet as pq
    a, b = pq.read_table(tmp_path / "c.parquet"), pq.read_table(tmp_path / "i.parquet")
    assert a.column("samples").to_pylist() == b.column("samples").to_pylist()
    assert not list((out / "ngram").glob(".count-work/*"))  # parts removed at the end


@pytest.mark.parametrize("runner", ["local", "remote"])
def test_a_failed_contamination_chunk_is_one_line_and_the_rerun_resumes(
        references, remote, remote_faults, tmp_path, runner):
    import json

    out = _indexed_copy(references[False], tmp_path)
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"text": f"example {i} of the benchmark, a few words"}) + "\n"
                             for i in range(2600)))  # three chunks of 1,024
    args = ["contamination", str(out), "--input", str(bench), "--output",
            str(tmp_path / "c.parquet"), *_where(runner, remote)]
    _fail_then_resume(args, "contamination:2=bug",
                      r"error: contamination-0-\d failed: RuntimeError: fault point contamination",
                      runner, remote, remote_faults)
    one = _cli(*args[:-len(_where(runner, remote))], "--scheduler", "synchronous", "--output",
               str(tmp_path / "d.parquet"))
    assert one.returncode == 0, one.stderr
    assert (tmp_path / "c.parquet").read_bytes() == (tmp_path / "d.parquet").read_bytes()


# --- lost workers and schedulers -----------------------------------------------------------

@pytest.mark.parametrize("dedup", [False, True])
def test_a_local_worker_killed_mid_build_costs_only_its_tasks(dirty_corpus, references,
                                                              tmp_path, dedup):
    marker = tmp_path / "killed-once"
    r = _cli(*_build(dirty_corpus, tmp_path / "out", "--workers", "2", "--quiet", dedup=dedup),
             env={faults.KILL_AT: "tokenize:3", faults.WORKER_ONCE: str(marker)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert marker.exists()  # a worker really died (and its nanny started another)
    assert _files(tmp_path / "out") == _files(references[dedup])


@pytest.mark.parametrize("dedup", [False, True])
def test_a_remote_worker_killed_mid_build_replaced_by_its_nanny(
        dirty_corpus, references, remote, remote_faults, tmp_path, dedup):
    marker = tmp_path / "killed-once"
    remote_faults(**{faults.KILL_AT: "tokenize:3", faults.WORKER_ONCE: str(marker)})
    r = _cli(*_build(dirty_corpus, tmp_path / "out", "--scheduler", remote.address, "--quiet",
                     dedup=dedup))
    assert r.returncode == 0, r.stderr[-3000:]
    assert marker.exists()
    assert _files(tmp_path / "out") == _files(references[dedup])
    remote.wait_for_workers(2)  # replaced: the next test has its two workers


def _wait_for_work(out: Path, pattern: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not list((out / ".pileprep-work").glob(pattern)):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the build never got there"
        time.sleep(0.05)


def test_a_remote_worker_killed_for_good_mid_build(dirty_corpus, references, tmp_path):
    """kill -9 of a whole `dask worker` (nanny and worker process): the other worker finishes."""
    cluster = RemoteCluster(tmp_path / "cluster")
    try:
        out = tmp_path / "out"
        build = _popen(*_build(dirty_corpus, out, "--scheduler", cluster.address,
                               "--partition-bytes", "4000"))
        _wait_for_work(out, "tokens-*/*.done.json", build)
        cluster.kill_worker(0)
        _, err = build.communicate(timeout=300)
        assert build.returncode == 0, err[-3000:]
        assert _files(out) == _files(references[True])
    finally:
        cluster.stop()


def test_a_lost_scheduler_is_one_line_and_a_new_cluster_resumes(dirty_corpus, references,
                                                                 tmp_path):
    out = tmp_path / "out"
    cluster = RemoteCluster(tmp_path / "cluster1")
    try:
        args = _build(dirty_corpus, out, "--partition-bytes", "4000")
        build = _popen(*args, "--scheduler", cluster.address)
        _wait_for_work(out, "tokens-*/*.done.json", build)
        cluster.kill_scheduler()
        _, err = build.communicate(timeout=120)
    finally:
        cluster.stop()
    r = subprocess.CompletedProcess(build.args, build.returncode, "", err)
    assert r.returncode == 2
    line = _one_error_line(r)
    assert f"lost the Dask scheduler at {cluster.address}" in line
    assert "run the same command again to resume" in line
    _no_outputs(out)
    again = RemoteCluster(tmp_path / "cluster2")
    try:
        resumed = _cli(*args, "--scheduler", again.address)
    finally:
        again.stop()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "reusing" in resumed.stderr
    assert _files(out) == _files(references[True])


def test_a_task_whose_workers_run_out_of_memory_is_retried_then_named(dirty_corpus, tmp_path):
    r = _cli(*_build(dirty_corpus, tmp_path, "--workers", "2", "--memory-limit", "1GiB",
                     dedup=False), env={faults.FAIL_AT: "ingest=memory"})
    assert r.returncode == 2
    line = _one_error_line(r)
    assert "every worker that ran it died" in line and "--memory-limit, now 1GiB" in line
    assert line.startswith("pileprep build: error: ingest ")


def test_an_unreachable_scheduler_is_one_line(tmp_path, dirty_corpus):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    r = _cli(*_build(dirty_corpus, tmp_path, "--scheduler", f"tcp://127.0.0.1:{port}",
                     "--connect-timeout", "2", dedup=False))
    assert r.returncode == 2 and time.monotonic() - t0 < 60
    line = _one_error_line(r)
    assert line.startswith(f"pileprep build: error: cannot reach the Dask scheduler at "
                           f"tcp://127.0.0.1:{port}"), line


# --- the machine and the user --------------------------------------------------------------

@pytest.mark.parametrize("point", ["ingest", "tokenize:3", "dedup:4", "append", "pack",
                                   "schedule", "commit"])
def test_ctrl_c_anywhere_is_one_line_and_the_rerun_resumes(dirty_corpus, references, tmp_path,
                                                          point):
    """SIGINT to the whole process group, as Ctrl-C sends it: driver and local workers."""
    args = _build(dirty_corpus, tmp_path, "--workers", "2")
    r = _cli(*args, env={faults.FAIL_AT: f"{point}=sigint"})
    assert r.returncode == 130
    assert _one_error_line(r).endswith("interrupted; run the same command again to resume")
    resumed = _cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if point in ("append", "pack", "schedule", "commit"):  # every shard was read
        assert "ingest: reusing 3 of 3 shards" in resumed.stderr
    assert _files(tmp_path) == _files(references[True])


def test_a_failed_run_stops_its_reads_still_running_on_a_cluster(remote, tmp_path):
    """A bad record in the first shard fails the build at once; the reads of the others, long
    ones, stop at their next partition instead of going on for nobody, and the command ends
    only once the cluster runs nothing of it."""
    from pileprep.sources.synth import SynthConfig, generate

    shards = tmp_path / "shards"
    generate(SynthConfig(shards, shards=4, megabytes=4.0, seed=8, bad_lines=[(0, 0, b"[1]")]))
    out = tmp_path / "out"
    r = _cli(*_build(shards, out, "--strict", "--partition-bytes", "20000", "--scheduler",
                     remote.address, dedup=False))
    assert r.returncode == 2 and "00.jsonl.zst: line 0" in _one_error_line(r)
    with remote.client() as client:
        assert not any(keys for keys in client.processing().values())

    def cut() -> int:
        return len(list((out / ".pileprep-work").glob("ingest-*/0[123].jsonl.zst.*.part.json")))

    stopped = cut()
    time.sleep(3)
    assert cut() == stopped < 3 * 4e6 / 20000 / 4  # nothing read on, far from the shards' ends


def test_a_second_build_into_the_same_directory_is_refused(dirty_corpus, references, tmp_path):
    out = tmp_path / "out"
    with outdir.locked(out, "build"):  # held by this process
        r = _cli(*_build(dirty_corpus, out, "--workers", "2"))
    assert r.returncode == 2
    assert f"is in use by pileprep build (pid {os.getpid()})" in _one_error_line(r)
    first = _popen(*_build(dirty_corpus, out, "--workers", "2"))
    deadline = time.monotonic() + 60
    while not (out / outdir.LOCK_FILE).exists():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    second = _cli(*_build(dirty_corpus, out, "--workers", "2"))
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert f"in use by pileprep build (pid {first.pid})" in _one_error_line(second)
    assert _files(out) == _files(references[True])
    assert not (out / outdir.LOCK_FILE).exists()


@pytest.mark.parametrize("kind,said", [("truncate", "the input shard was cut from"),
                                       ("delete", "the input shard was deleted while it was read")])
def test_an_input_shard_changed_while_read_is_one_line(dirty_corpus, tmp_path, kind, said):
    shards = tmp_path / "shards"
    shutil.copytree(dirty_corpus, shards)
    r = _cli(*_build(shards, tmp_path / "out", "--workers", "2", "--partition-bytes", "4000",
                     dedup=False), env={faults.FAIL_AT: f"read:2={kind}"})
    assert r.returncode == 2
    line = _one_error_line(r)
    assert said in line and "run the build again once the input is stable" in line
    _no_outputs(tmp_path / "out")


def _mount_tmpfs(path: Path, size: str, remount: bool = False) -> bool:
    opts = f"{'remount,' if remount else ''}size={size}"
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_full_disk_is_one_line_and_the_rerun_completes(dirty_corpus, references, tmp_path):
    """A real small file system under OUT_DIR (tmpfs; skipped where mounting is not allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not _mount_tmpfs(mnt, "700k"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = mnt / "out"
        args = _build(dirty_corpus, out, "--workers", "2")
        r = _cli(*args)
        assert r.returncode == 2
        line = _one_error_line(r)
        assert os.strerror(errno.ENOSPC) in line and str(mnt) in line, line
        assert not list(out.glob("*.bin"))
        assert _mount_tmpfs(mnt, "64m", remount=True)
        resumed = _cli(*args)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert _files(out) == _files(references[True])
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
