"""Fork a local cluster's workers from one warm server instead of spawning each afresh.

Dask spawns each worker of a local cluster as a new interpreter, which then imports Dask,
pyarrow and pileprep and builds the tokenizer engine: ~2 s of CPU per worker before its first
document, paid again by every worker of a 64-core node. With multiprocessing's ``forkserver``
start method a server does that once (:mod:`pileprep.runner.warm` is its preload) and each
worker is a fork of it. A build starts the server first thing (:func:`start_for`), so it warms
up while the driver imports its code, checks the settings and lists the shards.

The server lives as long as the process that started it and keeps the environment and working
directory it started with, and the encoder of the tokenizer file as it was. A later cluster of
the same process whose environment, directory or tokenizer file differs spawns its workers as
before, so a changed variable or file always reaches them; so does a
cluster of a process where something else started multiprocessing's fork server first (its
environment is not known). Linux only: elsewhere, and when
``DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD`` (or Dask's configuration) names a start
method, workers start as Dask's configuration says. Other ``forkserver`` processes the same
program starts later share the server, with its environment.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
from pathlib import Path
import dask

from pileprep.core.config import BuildConfig
from pileprep.core.errors import ConfigError

METHOD_KEY = "distributed.worker.multiprocessing-method"
METHOD_ENV = "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD"  # the user's choice: kept
WARM_MODULE = "pileprep.runner.warm"  # the server's preload
SPEC = "PILEPREP_PREFORK"  # what it warms, JSON: {"modules": [...], "tokenizer", "engine", "minhash"}
# Dask starts workers with MALLOC_TRIM_THRESHOLD_ set, which also freezes glibc's mmap threshold
# at 128 KiB: every larger buffer (a batch's code points and ids, Arrow pages) is then mapped,
# faulted in page by page and unmapped again, batch after batch: 11.3 s instead of 9.8 s for the
# tokenizer benchmark's build (benchmarks/engines.py --allocator-check), once the heap may keep
# buffers up to 32 MiB. Set before the worker processes start: glibc reads it at start.
WORKER_PRE_SPAWN_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20)}
_started: tuple | None = None  # _state() when our server started
_foreign = False  # a fork server was running before ours could start
_warmed: str | None = None  # the tokenizer file our server built an encoder from


def worker_environ() -> dict[str, str]:
    """Set in this process the variables a local cluster's workers start with, as Dask's nanny
    would (the process's own value wins, the hash seed is fixed); return them."""
    _distributed_defaults()
    # As in Runner: one task thread per worker; a tokenizer thread pool would oversubscribe.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    configured = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
                  **WORKER_PRE_SPAWN_ENV}
    env = {k: os.environ.get(k, str(v)) for k, v in configured.items() if v is not None}
    if env.get("PYTHONHASHSEED") in (None, "0"):
        env["PYTHONHASHSEED"] = "6640"
    os.environ.update(env)
    return env


def _distributed_defaults() -> None:
    """Dask's configuration defaults for ``distributed`` (the nanny's pre-spawn variables among
    them) without importing it yet, which would keep the server waiting 0.2 s longer. Defaults
    never override what the user configured; importing ``distributed`` later sets them again."""
    if "distributed" in sys.modules:
        return
    spec = importlib.util.find_spec("distributed")
    path = Path(spec.origin).parent / "distributed.yaml" if spec and spec.origin else None
    if path is None or not path.exists():
        import distributed  # noqa: F401 - it sets its defaults on import
        return
    for defaults in dask.config.collect_yaml([str(path)]):
        dask.config.update_defaults(defaults)


def start_for(cfg: BuildConfig, tokenize: bool = True) -> None:
    """Start the server now if the build runs on a local cluster, warmed for its workers: the
    modules its ingest and consumer tasks run, and (``tokenize``) its tokenizer engine.
    Idempotent."""
    global _warmed
    if cfg.cluster.scheduler is not None or not _usable() or _started is not None:
        return
    worker_environ()
    _warmed = cfg.tokenize.tokenizer if tokenize else None
    spec = {"modules": ["pileprep.stages.ingest"], "tokenizer": _warmed,
            "engine": cfg.tokenize.engine}
    if cfg.dedup.enabled:
        spec["modules"].append("pileprep.stages.dedup")
        spec["minhash"] = [cfg.dedup.num_perm, cfg.dedup.seed, cfg.dedup.shingle_words]
    _start(spec)


def start_method() -> str:
    """How to start a local cluster's workers: ``forkserver`` when our server runs with this
    process's environment (starting it now if none runs), else Dask's configured method
    (``spawn`` unless the user chose another)."""
    configured = dask.config.get(METHOD_KEY, "spawn")
    if configured not in multiprocessing.get_all_start_methods():
        raise ConfigError(f"Dask's {METHOD_KEY} ({METHOD_ENV}) must be one of "
                          f"{', '.join(multiprocessing.get_all_start_methods())}, "
                          f"not {configured!r}")
    if not _usable():
        return configured
    worker_environ()
    if _started is None:
        _start({})
    import distributed.utils
    # Else Dask's first worker start imports every optional package it knows in this process
    # (pandas among them) only to preload them into a server that has already started.
    distributed.utils._forkserver_preload_set = True
    return "forkserver" if not _foreign and _started == _state() else configured


def _usable() -> bool:
    return (sys.platform == "linux" and METHOD_ENV not in os.environ
            and dask.config.get(METHOD_KEY, "spawn") == "spawn")


def _state() -> tuple:
    """What workers forked from the server inherit as it was: the environment, the working
    directory, and the tokenizer file it built its encoder from (a file rewritten since then
    must be read again, by workers spawned afresh)."""
    try:
        st = os.stat(_warmed) if _warmed else None
    except OSError:
        st = None
    file = st and (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return dict(os.environ), os.getcwd(), file


def _start(spec: dict) -> None:
    global _started, _foreign
    server = multiprocessing.forkserver._forkserver
    if getattr(server, "_forkserver_pid", None) is not None:
        _started, _foreign = _state(), True  # another's, with an environment we do not know
        return
    multiprocessing.get_context("forkserver").set_forkserver_preload([WARM_MODULE])
    os.environ[SPEC] = json.dumps(spec)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        del os.environ[SPEC]
    _started = _state()
    atexit.register(_stop, getattr(server, "_forkserver_pid", None))


def _stop(pid: int | None) -> None:
    """At exit: end the server at once. It would end by itself once this process is gone, but
    only after its warm-up, holding this process's standard output open until then (a command
    that fails on a setting would seem to take the warm-up's time)."""
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
