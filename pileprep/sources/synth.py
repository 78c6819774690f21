"""Generate realistic Pile-format shards for tests, the demo and benchmarks.

The real Pile cannot be downloaded here, so every test builds its own corpus. The generator aims
at the properties that break preprocessing pipelines: mixed subsets with very different styles
(prose, code, maths, chat logs, e-mail), scripts beyond Latin, decomposed Unicode that NFC
changes, emoji, long runs of spaces and tabs, CRLF line ends, very short and very long documents,
the literal string ``<|endoftext|>`` inside text, and exact and near duplicates planted *across*
shards. The planted duplicates are written to ``truth.json`` so dedup tests can check recall.

Output is deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import zstandard

SUBSETS = [
    "Pile-CC", "PubMed Central", "Books3", "OpenWebText2", "ArXiv", "Github", "FreeLaw",
    "StackExchange", "USPTO Backgrounds", "PubMed Abstracts", "Gutenberg (PG-19)",
    "OpenSubtitles", "Wikipedia (en)", "DM Mathematics", "Ubuntu IRC", "BookCorpus2",
    "EuroParl", "HackerNews", "YoutubeSubtitles", "PhilPapers", "NIH ExPorter", "Enron Emails",
]
# Rough shares of the Pile by document count, so the subset mix looks like the real one.
SUBSET_WEIGHTS = [30, 5, 1, 12, 2, 10, 3, 10, 4, 10, 1, 1, 6, 2, 1, 1, 1, 1, 1, 1, 1, 2]

_SYLLABLES = [
    "ka", "lo", "mi", "ne", "ru", "sta", "pre", "con", "tion", "al", "er", "in", "de", "ver",
    "pro", "ment", "ab", "ex", "tri", "gon", "phy", "lum", "or", "ant", "is", "ol", "ue", "th",
    "qu", "ing", "ly", "ble", "ous", "un", "re", "sub", "inter", "nal", "ic", "ent",
]
_FUNCTION_WORDS = [
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be",
    "by", "on", "not", "he", "I", "this", "are", "or", "his", "from", "at", "which", "but",
    "we", "they", "you", "don't", "it's", "we're", "they've", "I'm", "she'll", "he'd",
]
_UNICODE_SNIPPETS = [
    "数据集的去重是训练语言模型的重要步骤。", "これは日本語の文です。", "Пример текста на русском языке.",
    "هذا نص باللغة العربية.", "यह हिंदी में एक वाक्य है।", "Ελληνικά κείμενα με τόνους.",
    "한국어 문장입니다.", "ภาษาไทยไม่มีช่องว่างระหว่างคำ", "Tiếng Việt có dấu.",
    "emoji 🙂🚀👩‍👩‍👧‍👦 flags 🇩🇪🇯🇵 skin 👍🏽", "math ∑ᵢ xᵢ² ≤ ∞, ∀ε>0 ∃δ",
    # Decomposed forms: NFC composes these, so the tokenizer's normalizer matters.
    "cafe\u0301 re\u0301sume\u0301 n\u0303 A\u030a", "Z\u0351\u0352a\u0353l\u0354g\u0355o\u0356",
    "\u1e9b\u0323 \ufb01 \u2126 \u212b", "tab\tseparated\tvalues\t", "zero\u200bwidth\u200djoiner",
    "new scripts: \U0001e900\U0001e922 \U00011f00\U00011f04 \U0001fae8",
]
_CODE_SNIPPETS = [
    "def {w}(x, y):\n    \"\"\"Return the {w} of x and y.\"\"\"\n    if x > y:\n        return x - y\n"
    "    return y - x\n",
    "#include <stdio.h>\n\nint {w}(int n) {{\n\tint s = 0;\n\tfor (int i = 0; i < n; ++i) {{\n"
    "\t\ts += i * i;\n\t}}\n\treturn s;\n}}\n",
    "class {W}:\n    def __init__(self):\n        self.items = []\n\n    def add(self, item):\n"
    "        self.items.append(item)          # trailing comment after spaces\n",
    "<div class=\"{w}\">\n  <span>{w}</span>\n</div>\n",
    "SELECT {w}, COUNT(*) FROM t WHERE {w} IS NOT NULL GROUP BY {w};\n",
    "fn {w}(v: &[u32]) -> u64 {{\n    v.iter().map(|&x| x as u64).sum()\n}}\n",
    "    \n        \n                                        end_of_block()\n",
]


@dataclass
class SynthConfig:
    """What to generate: ``shards`` files of about ``megabytes`` each."""

    output: Path
    shards: int = 3
    megabytes: float = 2.0
    seed: int = 0
    compress: bool = True
    exact_dup_rate: float = 0.02
    near_dup_rate: float = 0.03
    near_dup_edit_rate: float = 0.004  # words changed in a near duplicate (Jaccard ~0.96)
    max_doc_words: int = 30000
    bad_lines: list[tuple[int, int, bytes]] = field(default_factory=list)  # (shard, line, raw)


class _Vocab:
    def __init__(self, rng: random.Random, size: int = 6000):
        words = set()
        while len(words) < size:
            words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))))
        self.words = sorted(words) + _FUNCTION_WORDS
        # Zipf-like weights: term-frequency studies need a heavy head and a long tail.
        self.weights = [1.0 / (rank + 10) for rank in range(len(self.words))]
        self.cum = list(_accumulate(self.weights))

    def sample(self, rng: random.Random, k: int) -> list[str]:
        return rng.choices(self.words, cum_weights=self.cum, k=k)


def _accumulate(xs):
    total = 0.0
    for x in xs:
        total += x
        yield total


def _prose(rng: random.Random, vocab: _Vocab, n_words: int, newline: str) -> str:
    words = vocab.sample(rng, n_words)
    out, sentence = [], []
    for w in words:
        sentence.append(w)
        if len(sentence) >= rng.randint(6, 25):
            s = " ".join(sentence)
            out.append(s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", "!", ";", ","]))
            sentence = []
            if rng.random() < 0.15:
                out.append(newline + newline)
            if rng.random() < 0.05:
                out.append(rng.choice(_UNICODE_SNIPPETS))
    if sentence:
        out.append(" ".join(sentence) + ".")
    return " ".join(out)


def _code(rng: random.Random, vocab: _Vocab, n_blocks: int) -> str:
    parts = []
    for _ in range(n_blocks):
        w = vocab.sample(rng, 1)[0]
        parts.append(rng.choice(_CODE_SNIPPETS).format(w=w, W=w.capitalize()))
    return "\n".join(parts)


def _maths(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(1, 12)):
        a, b, c = rng.randint(-99, 99), rng.randint(1, 999), rng.randint(0, 10**6)
        lines.append(f"Solve {a}*x + {b} = {c} for x.\n{(c - b) / a if a else 0:.4g}")
    return "\n".join(lines)


def _chat(rng: random.Random, vocab: _Vocab) -> str:
    lines = []
    for i in range(rng.randint(2, 40)):
        nick = vocab.sample(rng, 1)[0]
        lines.append(f"[{i // 60:02d}:{i % 60:02d}] <{nick}> " + " ".join(vocab.sample(rng, rng.randint(1, 15))))
    return "\n".join(lines)


def _email(rng: random.Random, vocab: _Vocab) -> str:
    w = vocab.sample(rng, 3)
    body = _prose(rng, vocab, rng.randint(20, 300), "\r\n")
    return (f"Message-ID: <{rng.randint(10**8, 10**9)}.JavaMail.{w[0]}@thyme>\r\nFrom: {w[1]}@enron.com\r\n"
            f"Subject: RE: {w[2]}\r\n\r\n{body}\r\n")


def _document(rng: random.Random, vocab: _Vocab, subset: str, max_words: int) -> str:
    # Length distribution: mostly short-to-medium, a heavy tail of very long documents.
    r = rng.random()
    if r < 0.02:
        n = rng.randint(1, 3)
    elif r < 0.97:
        n = int(rng.lognormvariate(5.0, 1.0)) + 1
    else:
        n = rng.randint(max_words // 3, max_words)
    if subset == "Github":
        text = _code(rng, vocab, max(1, n // 40))
    elif subset == "DM Mathematics":
        text = _maths(rng)
    elif subset == "Ubuntu IRC":
        text = _chat(rng, vocab)
    elif subset == "Enron Emails":
        text = _email(rng, vocab)
    else:
        text = _prose(rng, vocab, n, "\r\n" if rng.random() < 0.05 else "\n")
    extra = rng.random()
    if extra < 0.01:
        text += " <|endoftext|> " + _prose(rng, vocab, 10, "\n")
    elif extra < 0.02:
        text = " " * rng.randint(1, 60) + text + " " * rng.randint(1, 60)
    elif extra < 0.03:
        text = text.replace(" ", " " * rng.randint(2, 40), rng.randint(1, 5))
    elif extra < 0.035:
        text = rng.choice(["x", " ", "\n", "\u00e9", "🙂", "<|padding|>"])
    return text


def _near_duplicate(rng: random.Random, vocab: _Vocab, text: str, edit_rate: float) -> str:
    words = text.split(" ")
    n_edits = max(1, int(len(words) * edit_rate))
    for _ in range(n_edits):
        i = rng.randrange(len(words))
        words[i] = vocab.sample(rng, 1)[0]
    return " ".join(words)


def generate(cfg: SynthConfig) -> dict:
    """Write the shards and ``truth.json``; return the truth record."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(cfg.seed)
    vocab = _Vocab(random.Random(cfg.seed + 1))
    target = int(cfg.megabytes * 1_000_000)
    ext = ".jsonl.zst" if cfg.compress else ".jsonl"
    pool: list[tuple[str, int, str, str]] = []  # earlier documents that may be duplicated
    truth = {"exact": [], "near": [], "shards": []}
    bad = {(s, ln): raw for s, ln, raw in cfg.bad_lines}
    for shard in range(cfg.shards):
        name = f"{shard:02d}{ext}"
        path = out / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        written, line = 0, 0
        with open(tmp, "wb") as raw_file:
            sink = zstandard.ZstdCompressor(level=3).stream_writer(raw_file) if cfg.compress else raw_file
            while written < target or any(s == shard and ln >= line for s, ln in bad):
                if (shard, line) in bad:
                    payload = bad.pop((shard, line))
                else:
                    subset, text, dup = _pick(rng, vocab, cfg, pool, truth, name, line)
                    payload = orjson.dumps({"text": text, "meta": {"pile_set_name": subset}})
                    if dup is None and len(pool) < 5000 and rng.random() < 0.3:
                        pool.append((name, line, subset, text))
                sink.write(payload + b"\n")
                written += len(payload) + 1
                line += 1
            if cfg.compress:
                sink.flush(zstandard.FLUSH_FRAME)
        tmp.replace(path)
        truth["shards"].append({"name": name, "lines": line})
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def _pick(rng, vocab, cfg, pool, truth, name, line):
    r = rng.random()
    if pool and r < cfg.exact_dup_rate:
        src, src_line, subset, text = rng.choice(pool)
        truth["exact"].append([name, line, src, src_line])
        return subset, text, "exact"
    if pool and r < cfg.exact_dup_rate + cfg.near_dup_rate:
        src, src_line, subset, text = rng.choice(pool)
        if len(text.split(" ")) >= 50:
            truth["near"].append([name, line, src, src_line])
            return subset, _near_duplicate(rng, vocab, text, cfg.near_dup_edit_rate), "near"
    subset = rng.choices(SUBSETS, weights=SUBSET_WEIGHTS)[0]
    return subset, _document(rng, vocab, subset, cfg.max_doc_words), None
