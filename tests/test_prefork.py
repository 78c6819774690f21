"""Local workers forked from a warm server (pileprep.runner.prefork): what they start with, when
they are spawned instead, and that a server that could not warm up still serves.

Each case runs in a fresh interpreter: the fork server lives as long as the process that
started it, and this test process has one already (its builds run local clusters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers fork only on Linux")
# What a worker reports: its parent, whether the encoder and the task modules came with it,
# and the environment its process started with (/proc: what glibc read at start).
PROBE = textwrap.dedent("""
    import json, multiprocessing.forkserver, os, sys
    from pileprep.runner.prefork import start_for
    from pileprep.runner.dask_runner import Runner
    from pileprep.core.config import BuildConfig, ClusterConfig, with_settings

    def probe():
        import sys, os
        encoders = 0
        if "pileprep.tokenizer.fast" in sys.modules:
            encoders = sys.modules["pileprep.tokenizer.fast"].fast_encoder.cache_info().currsize
        from pileprep.tokenizer import TokenizerInfo, encode, resolve_engine
        engine = resolve_engine(sys.argv[1], sys.argv[3])[0]
        ids, _ = encode(TokenizerInfo.of(sys.argv[1], engine), ["Hello world"])
        with open("/proc/self/environ", "rb") as f:
            start_env = dict(v.split(b"=", 1) for v in f.read().split(b"\\0") if b"=" in v)
        return {"parent": os.getppid(), "encoders": encoders, "ids": ids.tolist(),
                "ingest": "pileprep.stages.ingest" in sys.modules,
                "mark": os.environ.get("PILEPREP_TEST_MARK"),
                "start_mmap": start_env.get(b"MALLOC_MMAP_THRESHOLD_", b"").decode(),
                "start_omp": start_env.get(b"OMP_NUM_THREADS", b"").decode()}

    def workers(n=2):
        with Runner(ClusterConfig(workers=n), quiet=True) as runner:
            return list(runner.client.run(probe).values())

    if __name__ == "__main__":
        if sys.argv[4] == "foreign":  # somebody else's fork server, started first
            multiprocessing.forkserver.ensure_running()
        cfg = with_settings(BuildConfig(), {"tokenize.tokenizer": sys.argv[1],
                                            "tokenize.engine": sys.argv[2]})
        start_for(cfg)
        if sys.argv[4] == "rewritten":  # the tokenizer file changes once the server has it
            st = os.stat(sys.argv[1])
            os.utime(sys.argv[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        out = {"driver": os.getpid(), "first": workers()}
        os.environ["PILEPREP_TEST_MARK"] = "changed"  # the server's environment is now stale
        out["changed"] = workers(1)
        print(json.dumps(out))
""")


def _run(tmp_path, tokenizer: str, warm: str = "auto", engine: str = "auto",
         server: str = "ours") -> dict:
    """Run PROBE: the server warmed with ``--tokenizer-engine warm``, the workers encoding
    with ``engine``; ``server="foreign"``: a fork server started before pileprep's;
    ``"rewritten"``: the tokenizer file touched once the server started."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "PILEPREP_TEST_MARK"}
    r = subprocess.run([sys.executable, str(script), tokenizer, warm, engine, server],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def probed(tmp_path_factory, tokenizer_spec, tokenizer):
    out = _run(tmp_path_factory.mktemp("prefork"), tokenizer_spec)
    out["expected"] = tokenizer.encode("Hello world").ids + [0]
    return out


def test_workers_fork_from_a_server_with_the_encoder_built(probed):
    from pileprep.runner.prefork import WORKER_PRE_SPAWN_ENV

    first = probed["first"]
    assert len(first) == 2
    for w in first:
        assert w["parent"] != probed["driver"]  # the fork server's child, not the driver's
        assert w["encoders"] == 1 and w["ingest"]
        # In the environment the process started with, so glibc and OpenMP read them.
        assert w["start_mmap"] == WORKER_PRE_SPAWN_ENV["MALLOC_MMAP_THRESHOLD_"]
        assert w["start_omp"] == os.environ.get("OMP_NUM_THREADS", "1")
        assert w["ids"] == probed["expected"]
    assert len({w["parent"] for w in first}) == 1


def test_a_changed_environment_reaches_workers_spawned_afresh(probed):
    (w,) = probed["changed"]
    assert w["mark"] == "changed"
    assert w["parent"] == probed["driver"]
    assert w["encoders"] == 0


def test_a_server_that_cannot_warm_up_still_starts_workers(tmp_path, tokenizer_spec, tokenizer):
    """A warm-up that fails (here: an engine name the server refuses) is quiet; the workers
    build the encoder themselves, as spawned ones do."""
    out = _run(tmp_path, tokenizer_spec, warm="no-such-engine")
    expected = tokenizer.encode("Hello world").ids + [0]
    assert [w["encoders"] for w in out["first"]] == [0, 0]
    assert [w["ids"] for w in out["first"]] == [expected, expected]
    assert all(w["parent"] != out["driver"] and w["ingest"] for w in out["first"])


def test_the_reference_engine_is_not_warmed_and_works_in_forked_workers(tmp_path, tokenizer_spec,
                                                                          tokenizer):
    """Its thread pool (TOKENIZERS_PARALLELISM=true, as in this suite) would not survive a
    fork: the server leaves it alone, and a worker's first encode must not hang."""
    out = _run(tmp_path, tokenizer_spec, warm="reference", engine="reference")
    expected = tokenizer.encode("Hello world").ids + [0]
    assert [w["ids"] for w in out["first"]] == [expected, expected]
    assert [w["encoders"] for w in out["first"]] == [0, 0]


def test_a_fork_server_started_by_someone_else_is_not_used(tmp_path, tokenizer_spec):
    out = _run(tmp_path, tokenizer_spec, server="foreign")
    assert all(w["parent"] == out["driver"] for w in out["first"])  # spawned


def test_a_tokenizer_file_rewritten_after_the_server_built_it_reaches_workers_spawned(
        tmp_path, tokenizer_spec):
    copy = tmp_path / "tokenizer.json"
    copy.write_bytes(open(tokenizer_spec, "rb").read())
    out = _run(tmp_path, str(copy), server="rewritten")
    assert all(w["parent"] == out["driver"] and w["encoders"] == 0 for w in out["first"])


def test_a_bad_setting_is_reported_before_any_server_starts(monkeypatch, capsys):
    from pileprep.runner import prefork
    from pileprep.cli import main

    started = []
    monkeypatch.setattr(prefork, "start_for", lambda *a, **k: started.append(a))
    assert main(["build", "-i", "nowhere", "-o", "nowhere", "--workers", "0"]) == 2
    assert started == [] and "--workers" in capsys.readouterr().err


def test_an_unknown_worker_start_method_is_one_line(tmp_path, dirty_corpus, tokenizer_spec):
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD": "bogus"}
    r = subprocess.run([sys.executable, "-m", "pileprep.cli", "build", "-i", str(dirty_corpus),
                        "-o", str(tmp_path / "out"), "--tokenizer", tokenizer_spec,
                        "--workers", "2", "--no-schedule", "--quiet"],
                       capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if "error" in x]
    assert "multiprocessing-method" in line and "'bogus'" in line
