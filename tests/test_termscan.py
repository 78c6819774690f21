"""The streaming pass's scanner against counting every window in Python."""

from __future__ import annotations

import numpy as np
import pytest

from pileprep.training.termscan import TermScanner, copy_runs


def brute(rows: np.ndarray, q: list[int]) -> tuple[int, int, int]:
    occ = held = 0
    first = -1
    for r, row in enumerate(rows.tolist()):
        k = sum(row[c:c + len(q)] == q for c in range(len(row) - len(q) + 1))
        occ += k
        if k:
            held += 1
            first = r if first < 0 else first
    return occ, held, first


@pytest.mark.parametrize("dtype,width", [(np.uint16, 33), (np.int32, 17), (np.uint8, 9)])
def test_every_query_is_counted_as_a_python_count_of_windows(dtype, width):
    rng = np.random.default_rng(width)
    top = min(np.iinfo(dtype).max, 60)
    rows = (rng.zipf(1.4, (40, width)) % 7 + rng.integers(0, 3, (40, width))).clip(0, top).astype(dtype)
    queries = [[1], [1, 2], [1, 2, 1], [2, 2, 2, 2, 2, 2, 2, 2, 2], [1], [0], [top + 1000], [-3]]
    for _ in range(40):  # windows of the rows, of every length up to 10 (hashed past 64 bits)
        r, m = int(rng.integers(40)), int(rng.integers(1, min(11, width + 1)))
        c = int(rng.integers(0, width - m + 1))
        queries.append(rows[r, c:c + m].tolist())
    occ, held, first = TermScanner(queries, dtype).scan(rows)
    for i, q in enumerate(queries):
        assert (occ[i], held[i], first[i]) == brute(rows, q), q
    assert occ.sum() > held.sum() > 0


def test_rows_shorter_than_a_query_and_no_queries_in_range():
    rows = np.array([[1, 2], [2, 1]], np.uint16)
    occ, held, first = TermScanner([[1, 2, 3], [70000, 1]], np.uint16).scan(rows)
    assert occ.tolist() == [0, 0] and held.tolist() == [0, 0] and first.tolist() == [-1, -1]


def test_copy_runs_puts_the_runs_back_to_back():
    tokens = np.arange(50, dtype=np.uint16)
    assert copy_runs(tokens, np.array([7, 0, 40]), np.array([3, 2, 4])).tolist() == \
        [7, 8, 9, 0, 1, 40, 41, 42, 43]


def test_a_few_single_tokens_are_counted_by_vector_compares_the_same():
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 5, (30, 21)).astype(np.uint16)
    queries = [[1], [4], [1], [70000]]
    scanner = TermScanner(queries, np.uint16)
    assert scanner.few_tokens
    occ, held, first = scanner.scan(rows)
    for i, q in enumerate(queries):
        assert (occ[i], held[i], first[i]) == brute(rows, q), q
