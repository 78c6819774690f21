"""The LSH banding of a dedup run: datasketch's optimal bands and rows for a threshold.

Apart from the MinHash code (:mod:`pileprep.dedup.minhash`, numba) so that the driver, which
checks the banding before its workers start, loads neither numba (~0.3 s) nor datasketch
(~0.7 s) then: the optimum is kept in the derived-table cache.
"""

from __future__ import annotations

import numpy as np

from pileprep.core import tables
from pileprep.core.config import DedupConfig
from pileprep.core.errors import ConfigError


def _datasketch_version() -> str:
    """Without importing it: importing datasketch imports scipy.integrate, ~0.7 s."""
    from importlib.metadata import version

    return version("datasketch")


def lsh_params(threshold: float, num_perm: int, verify: bool) -> tuple[int, int]:
    """datasketch's optimal ``(bands, rows)`` for the threshold; ConfigError when it has none.

    With verification on, a false candidate costs one comparison while a missed pair is a
    duplicate left in the data, so the optimizer is asked to weigh false negatives 0.95.
    """
    weights = (0.05, 0.95) if verify else (0.5, 0.5)

    def build() -> np.ndarray:
        from datasketch import MinHashLSH

        try:
            lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
        except ValueError as exc:  # e.g. a threshold so high that one band is optimal
            raise ConfigError(f"dedup.threshold {threshold:g} with dedup.num_perm {num_perm}: "
                              f"datasketch finds no LSH banding ({exc}); give dedup.bands and "
                              "dedup.rows, or another dedup.threshold or dedup.num_perm") from None
        return np.array([lsh.b, lsh.r], np.int64)

    # Cached like a derived table: the driver checks the banding before its workers start,
    # and importing datasketch (scipy.integrate) would delay them ~0.7 s.
    name = f"lsh-datasketch{_datasketch_version()}-t{float(threshold)!r}-p{num_perm}-w{weights[0]}-{weights[1]}"
    b, r = tables.cached_table(name, build, np.int64, 2)
    return int(b), int(r)


def banding(cfg: DedupConfig) -> tuple[int, int]:
    """The ``(bands, rows)`` a dedup run uses: the given ones, else datasketch's optimum."""
    if cfg.bands is not None:
        return cfg.bands, cfg.rows
    return lsh_params(cfg.threshold, cfg.num_perm, cfg.verify)
