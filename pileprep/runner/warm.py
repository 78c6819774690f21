"""Imported by the fork server a local cluster's workers are forked from (see
:mod:`pileprep.runner.prefork`): do once, in that server, the start-up every worker would
otherwise repeat.

Importing Dask's worker, pyarrow and the build's task modules, numba's compiler start, the
tokenizer engine's tables and, for ``--dedup``, the MinHash pass's compiled code cost each
spawned worker ~2 s of CPU before its first document. Done here, every worker forked afterwards
has them already. Nothing here may stop the server: a failure only leaves a worker to do the
same work itself, where any error is reported as usual.
"""

from __future__ import annotations

import signal

# First of all: a Ctrl-C is the driver's to handle (pileprep.runner.local_worker), also while
# this server imports Dask below; its workers inherit the setting.
signal.signal(signal.SIGINT, signal.SIG_IGN)

import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

from pileprep.runner.prefork import SPEC  # noqa: E402

# Text that takes an encoder through every compiled step it has (pre-tokens, memo, BPE).
WARM_TEXTS = ["Warm up: the engine's 12 compiled steps, once. 数据\u0301 <|endoftext|>  x"]


def _warm() -> None:
    import distributed.nanny  # noqa: F401 - the worker process's own code
    import distributed.worker  # noqa: F401

    spec = json.loads(os.environ.get(SPEC) or "{}")
    for module in spec.get("modules", ()):
        importlib.import_module(module)
    if spec.get("minhash"):
        # Loading the MinHash pass's compiled code from numba's cache: ~0.45 s of CPU that
        # every worker of a --dedup build paid at its first partition (num_perm, seed, words).
        from pileprep.dedup import minhash

        minhash.signatures(WARM_TEXTS, *spec["minhash"])
    tokenizer = spec.get("tokenizer")
    # A file only: a hub id would download here too. The fast engine only: the reference
    # engine's thread pool (TOKENIZERS_PARALLELISM=true) does not survive a fork, and it
    # starts fast anyway.
    if tokenizer and os.path.isfile(tokenizer):
        from pileprep.tokenizer import resolve_engine
        from pileprep.tokenizer.fast import fast_encoder

        if resolve_engine(tokenizer, spec.get("engine", "auto"))[0] == "fast":
            fast_encoder(tokenizer).encode_batch(WARM_TEXTS)


try:
    _warm()
except BaseException:  # noqa: BLE001 - see the module's docstring (a Rust panic is one)
    pass
