"""A real dask.distributed cluster on 127.0.0.1: a scheduler and two worker processes started
with the `dask` command, as on several machines; the build must match a local one byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dask_cluster import RemoteCluster

pytestmark = pytest.mark.slow  # kills, restarts and real clusters: minutes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    remote = RemoteCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield remote.address
    finally:
        remote.stop()


def _build(corpus: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pileprep.cli", "build", "-i", str(corpus), "-o",
                           str(out), "--dedup", "--partition-bytes", "80000", "--seq-length", "64",
                           "--batch-size", "4", "--train-iters", "30", *extra],
                          capture_output=True, text=True)


def test_build_on_a_real_cluster_matches_a_local_build(cluster, dirty_corpus, tmp_path):
    remote = _build(dirty_corpus, tmp_path / "remote", "--scheduler", cluster)
    assert remote.returncode == 0, remote.stderr[-3000:]
    assert f"dask: scheduler {cluster}, 2 workers" in remote.stderr
    local = _build(dirty_corpus, tmp_path / "local", "--scheduler", "synchronous", "--quiet")
    assert local.returncode == 0, local.stderr[-3000:]
    # report.json holds timings; the GPT-NeoX fragment names its own directory (compared below)
    names = sorted(p.name for p in (tmp_path / "local").iterdir()
                   if p.is_file() and p.name != "report.json" and not p.name.startswith("gpt_neox"))
    assert "duplicates.parquet" in names and "pile_0.87_deduped_text_document.bin" in names
    for name in names:
        assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    frag = "gpt_neox_64sl_4bs_30it_1234s.yml"
    assert ((tmp_path / "remote" / frag).read_text().replace(str(tmp_path / "remote"), "OUT")
            == (tmp_path / "local" / frag).read_text().replace(str(tmp_path / "local"), "OUT"))


def test_local_workers_start_with_a_raised_mmap_threshold():
    """Local workers get MALLOC_MMAP_THRESHOLD_ before they start (dask's own pre-spawn
    variables are kept), and the driver's dask configuration is left as it was."""
    import dask

    from pileprep.runner.prefork import WORKER_PRE_SPAWN_ENV
    from pileprep.runner.dask_runner import Runner
    from pileprep.core.config import ClusterConfig

    with Runner(ClusterConfig(workers=1), quiet=True) as runner:
        seen = runner.client.run(lambda: {k: os.environ.get(k) for k in
                                          ("MALLOC_MMAP_THRESHOLD_", "OMP_NUM_THREADS")})
        configured = dask.config.get("distributed.nanny.pre-spawn-environ")
    (env,) = seen.values()
    assert env["MALLOC_MMAP_THRESHOLD_"] == WORKER_PRE_SPAWN_ENV["MALLOC_MMAP_THRESHOLD_"]
    assert env["OMP_NUM_THREADS"] == "1"
    assert "MALLOC_MMAP_THRESHOLD_" not in configured
