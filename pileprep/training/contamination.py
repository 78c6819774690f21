"""Benchmark contamination by training step: which of an example's n-grams the corpus holds,
which were trained by a step, from when, and whether the whole example was.

An example's n-grams are its windows of ``n`` tokens (an example shorter than ``n`` is one
n-gram: itself), counted with repeats. For each distinct n-gram the index gives its occurrences
inside documents; the trained ones among them, and the first training sample holding each, come
from :class:`.ngram.Counter` (exactly what ``pileprep count`` counts). The whole example is looked
up only when every one of its n-grams was found: otherwise it cannot occur whole.

Every document ends with EOD and examples are tokenized without it, so an n-gram holding no EOD
is trained only inside documents: one the corpus does not hold is not trained either, and only
the found ones go to the counter (most of a benchmark's n-grams are nowhere). An n-gram that
holds the EOD id (a literal ``<|endoftext|>`` in the text) is always counted in full.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pileprep.formats.suffix import SuffixIndex
from pileprep.training.ngram import corpus_counts, counter_for
from pileprep.training.order import TrainingOrder


@dataclass
class Contamination:
    """Per example (arrays of one entry each): n-grams, how many the corpus holds, how many
    were trained in the step range, the first training sample holding any (-1: none), and the
    whole example's corpus occurrences and first training sample (-1: never whole)."""

    ngrams: np.ndarray
    in_corpus: np.ndarray
    trained: np.ndarray
    first_sample: np.ndarray
    verbatim_corpus: np.ndarray
    verbatim_first_sample: np.ndarray


def grams_of(ids: list[int], n: int) -> list[tuple[int, ...]]:
    """An example's n-grams: every window of ``n`` tokens, or the example itself if shorter."""
    if len(ids) <= n:
        return [tuple(ids)] if ids else []
    return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


def contamination(order: TrainingOrder, index: SuffixIndex, examples: list[list[int]], n: int,
                  first_step: int, end_step: int) -> Contamination:
    """The contamination of ``examples`` (token id lists) by the trained samples of steps
    ``first_step .. end_step-1``."""
    grams = [grams_of(ids, n) for ids in examples]
    distinct = sorted({g for gs in grams for g in gs})
    corpus, first = _lookup(order, index, [list(g) for g in distinct], first_step, end_step)
    at = {g: i for i, g in enumerate(distinct)}
    E = len(examples)
    out = Contamination(np.zeros(E, np.int64), np.zeros(E, np.int64), np.zeros(E, np.int64),
                        np.full(E, -1, np.int64), np.zeros(E, np.int64), np.full(E, -1, np.int64))
    whole = []  # examples to look up whole: every n-gram found, and longer than one n-gram
    for e, gs in enumerate(grams):
        rows = np.array([at[g] for g in gs], np.int64)
        out.ngrams[e] = len(rows)
        out.in_corpus[e] = int((corpus[rows] > 0).sum()) if len(rows) else 0
        trained = first[rows][first[rows] >= 0] if len(rows) else rows
        out.trained[e] = len(trained)
        out.first_sample[e] = int(trained.min()) if len(trained) else -1
        if len(rows) == 1 and len(examples[e]) <= n:  # the example is its one n-gram
            out.verbatim_corpus[e], out.verbatim_first_sample[e] = corpus[rows[0]], first[rows[0]]
        elif len(rows) and out.in_corpus[e] == len(rows):
            whole.append(e)
    if whole:
        c, f = _lookup(order, index, [examples[e] for e in whole], first_step, end_step)
        out.verbatim_corpus[whole], out.verbatim_first_sample[whole] = c, f
    return out


def _lookup(order, index, queries: list[list[int]], first_step: int, end_step: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Corpus occurrences and first trained sample (-1: none) of each query."""
    corpus = corpus_counts(order, index, queries) if queries else np.zeros(0, np.int64)
    first = np.full(len(queries), -1, np.int64)
    last = index.last_token
    ask = [i for i, q in enumerate(queries) if corpus[i] > 0 or last is None or last in q]
    if ask:
        got = counter_for(order, index, first_step, end_step, 1).count([queries[i] for i in ask])
        first[ask] = got.first
    return corpus, first
