"""Independent helpers for dedup tests: shingles and true Jaccard in plain Python, and a corpus
of document pairs with known similarity planted across shards."""

from __future__ import annotations

import random
import unicodedata
from pathlib import Path

import orjson
import zstandard


def words(text: str) -> list[str]:
    # Written from the documented normalization, not from pileprep's code.
    return unicodedata.normalize("NFC", text).lower().split()


def shingles(text: str, n: int = 5) -> set[bytes]:
    w = words(text)
    if not w:
        return set()
    if len(w) < n:
        return {" ".join(w).encode()}
    return {" ".join(w[i:i + n]).encode() for i in range(len(w) - n + 1)}


def jaccard(x: str, y: str) -> float:
    a, b = shingles(x), shingles(y)
    return len(a & b) / len(a | b)


def _vocab(rng: random.Random, size: int = 40000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyzéüß"
    out = set()
    while len(out) < size:
        out.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 10))))
    return sorted(out)


def _edit(rng, vocab, base: list[str], k: int) -> list[str]:
    w = list(base)
    for i in rng.sample(range(len(w)), k):
        w[i] = rng.choice(vocab)
    return w


def pair_corpus(out: Path, seed: int = 0, high: int = 520, low: int = 520, exact: int = 80,
                shards: int = 4) -> dict:
    """Shards holding pairs of known true Jaccard: ``high`` >= 0.92, ``low`` <= 0.75, ``exact``
    identical (with whitespace and case changes only), plus unrelated filler documents.

    Returns ``{"high": [...], "low": [...], "exact": [...]}`` of ``((src, line), (src, line), J)``,
    the first member always earlier in ``(source, line)`` order.
    """
    rng = random.Random(seed)
    vocab = _vocab(rng)
    docs: list[list[tuple[str, object]]] = [[] for _ in range(shards)]  # (text, tag)
    tags = {"high": [], "low": [], "exact": []}

    def place(text_a: str, text_b: str, kind: str, j: float) -> None:
        sa, sb = sorted(rng.sample(range(shards), 2)) if rng.random() < 0.8 else (0, 0)
        tag = (kind, len(tags[kind]))
        tags[kind].append([None, None, j])
        docs[sa].append((text_a, (tag, 0)))
        docs[sb].append((text_b, (tag, 1)))

    while len(tags["high"]) < high or len(tags["low"]) < low:
        base = [rng.choice(vocab) for _ in range(rng.randint(150, 400))]
        want_high = len(tags["high"]) < high
        k = rng.randint(0, max(1, len(base) // 120)) if want_high else rng.randint(len(base) // 15, len(base) // 4)
        a, b = " ".join(base), " ".join(_edit(rng, vocab, base, k))
        j = jaccard(a, b)
        if want_high and 0.92 <= j < 1.0:
            place(a, b, "high", j)
        elif not want_high and j <= 0.75:
            place(a, b, "low", j)
    for _ in range(exact):
        base = [rng.choice(vocab) for _ in range(rng.randint(3, 300))]
        a = " ".join(base)
        b = "  ".join(w.upper() if w.isascii() and rng.random() < 0.1 else w for w in base) + "\n"
        place(a, b, "exact", 1.0)
    for s in range(shards):
        for _ in range(200):  # unrelated documents
            docs[s].append((" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 300))), None))
    out.mkdir(parents=True, exist_ok=True)
    for s, items in enumerate(docs):
        # Keep each pair's first member first when both are in one shard.
        rng.shuffle(items)
        firsts = {}
        for i, (_, t) in enumerate(items):
            if t is not None:
                firsts.setdefault(t[0], []).append(i)
        for idx in firsts.values():
            if len(idx) == 2 and items[idx[0]][1][1] == 1:
                items[idx[0]], items[idx[1]] = items[idx[1]], items[idx[0]]
        name = f"{s:02d}.jsonl.zst"
        with open(out / name, "wb") as f, zstandard.ZstdCompressor().stream_writer(f) as z:
            for line, (text, t) in enumerate(items):
                z.write(orjson.dumps({"text": text, "meta": {"pile_set_name": "P" + str(s % 2)}}) + b"\n")
                if t is not None:
                    (kind, i), member = t
                    tags[kind][i][member] = (name, line)
    return {k: [tuple(v) for v in vals] for k, vals in tags.items()}
