"""Pythia's checkpoints as steps of the training order.

Every Pythia model was saved at ``step0``, ``step1``, ``step2``, ``step4`` … ``step512`` (powers
of two) and every 1,000 steps from ``step1000`` to ``step143000``: 154 checkpoints. The model
``stepN`` had trained on steps ``0 .. N-1`` of the schedule (1,024 samples of 2,049 tokens a
step), so "data up to checkpoint stepN" is the step range ``0:N``.

The first Pythia models ("v0": ``pythia-160m-v0``, ``-410m-v0``, ``-1.4b-v0``, once named 125M,
350M and 1.3B) trained with 4M-token batches (2,048 samples) for 71,500 steps. Their
checkpoints are named in the 2M-token steps of the others, so that a name means the same
tokens seen in every model: v0 checkpoint ``stepN`` is v0 training step N/2 (the maintainers in
EleutherAI/pythia#39, "step1000 for the 1.3B is the first checkpoint", and #51, where the 350M's
``global_step{1500 … 71500}`` are revisions ``{3000 … 143000}``). With the same preshuffled
data, v0 training step K read items ``K*2048 .. K*2048+2047``: steps ``2K`` and ``2K+1`` of the
1,024-sample schedule.
"""

from __future__ import annotations

import re

from pileprep.core.errors import ConfigError

LOG_STEPS = [0] + [2 ** i for i in range(10)]  # step0, step1, step2, step4 ... step512
CHECKPOINTS = LOG_STEPS + list(range(1000, 143_001, 1000))
PYTHIA_BATCH = 1024  # samples a step in the schedule checkpoints are named in


def checkpoint_step(name: str) -> int:
    """``stepN`` (or ``N``), a published checkpoint, as N."""
    m = re.fullmatch(r"(?:step)?(\d+)", name.strip())
    if not m:
        raise ConfigError(f"a checkpoint is named stepN, e.g. step3000, not {name!r}")
    n = int(m.group(1))
    if n not in CHECKPOINTS:
        after = next((c for c in CHECKPOINTS if c > n), None)
        before = max(c for c in CHECKPOINTS if c < n) if n > 0 else None
        near = " or ".join(f"step{c}" for c in (before, after) if c is not None)
        raise ConfigError(f"step{n} is not a Pythia checkpoint (the nearest: {near})")
    return n


def steps_until(name: str) -> tuple[int, int]:
    """The steps a checkpoint had trained on: ``(0, N)``; step0 has seen none."""
    n = checkpoint_step(name)
    if n == 0:
        raise ConfigError("step0 is the model before any training: it has seen no data")
    return 0, n


def _pythias(batch_size: int, flag: str) -> None:
    if batch_size != PYTHIA_BATCH:
        raise ConfigError(f"{flag} names Pythia's steps of {PYTHIA_BATCH} samples; this schedule's "
                          f"batches are {batch_size} (give the steps themselves)")


def step_range(batch_size: int, train_iters: int, steps: tuple[int, int] | None = None,
               checkpoint: str | None = None, v0_step: int | None = None) -> tuple[int, int]:
    """The steps a command covers: ``steps``, those a checkpoint had trained on, those a v0
    training step read, or every step."""
    if steps is not None:
        return steps
    if checkpoint is not None:
        _pythias(batch_size, "--checkpoint")
        return steps_until(checkpoint)
    if v0_step is not None:
        _pythias(batch_size, "--v0-step")
        return v0_steps(v0_step)
    return 0, train_iters


def batch_steps(batch_size: int, step: int | None = None, checkpoint: str | None = None,
                v0_step: int | None = None) -> list[int]:
    """The steps whose batches make the batch asked for: ``step``; the last a checkpoint
    trained on (N-1); or the two a v0 training step read."""
    if checkpoint is not None:
        _pythias(batch_size, "--checkpoint")
        return [steps_until(checkpoint)[1] - 1]
    if v0_step is not None:
        _pythias(batch_size, "--v0-step")
        return list(range(*v0_steps(v0_step)))
    return [step]


def checkpoint_edges(batch_size: int, first: int, end: int) -> list[int]:
    """Bin edges at the published checkpoints inside ``first .. end``: a bin ending at N holds
    the steps trained between the checkpoint before it and ``stepN``."""
    _pythias(batch_size, "checkpoint bins")
    return sorted({first, end} | {c for c in CHECKPOINTS if first < c < end})


def v0_steps(k: int) -> tuple[int, int]:
    """The steps of the 1,024-sample schedule that v0 training step ``k`` read: ``(2k, 2k+2)``."""
    if not 0 <= k < 71_500:
        raise ConfigError(f"a v0 training step is 0..71499, not {k}")
    return 2 * k, 2 * k + 2
