"""Generated documents that stress a tokenizer's normalization, added tokens and pre-tokenization."""

from __future__ import annotations

import random

# Scripts and marks across Unicode versions, including recent additions (15.0/15.1/16.0).
_PIECES = [
    "the", "The", "THE", "don't", "it's", "we're", "they've", "I'm", "she'll", "he'd", "'s", "'t",
    "'re", "'ve", "'m", "'ll", "'d", "O'Neil", "rock'n'roll", "''", "'",
    "0", "7", "42", "3.14159", "1,000,000", "2024-11-23", "0x1F", "٣٤٥", "१२३", "½", "²", "Ⅻ",
    "café", "cafe\u0301", "e\u0301\u0301", "A\u030a", "\u212b", "\u2126", "\u1e9b\u0323",
    "n\u0303", "\u0958", "\uac00", "\u1100\u1161\u11a8", "한국어", "ﬁ", "ǅ", "ß", "İ", "ς",
    "数据集", "日本語", "Русский", "Ελληνικά", "עִבְרִית", "العربية", "हिन्दी", "ภาษาไทย",
    "\U0001e900\U0001e922", "\U00011f00\U00011f04", "\U0001fae8", "\U0001fac8", "\U0001e4d0",
    "\U00031350", "\U0002ebf0", "\U00011b00", "\U0001e5d0", "\U000105c0", "\U00016d40",
    "🙂", "🚀", "👩‍👩‍👧‍👦", "🇩🇪", "👍🏽", "\u200b", "\u200d", "\ufeff", "\u00ad", "\u2028",
    "\u3000", "\u00a0", "\u2003", "\x85", "\x00", "\x1b", "\x7f", "\ufffd",
    "<|endoftext|>", "<|padding|>", "<|endoftext", "|>", "<|", ">\u0338", "=\u0338",
    "<|endoftext|>\u0338", "def", "(x)", "{}", "[];", "->", "==", "!=", "/*", "*/", "#", "@", "$$",
    "x" * 300, "ab" * 200, "1" * 120, "é" * 100, "!" * 80, "-" * 64,
]
_SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\n\n", " \n", "\t \t", "\u3000", "\x0b", "\x0c"]


def document(rng: random.Random) -> str:
    parts = []
    if rng.random() < 0.2:
        parts.append(" " * rng.randint(1, 60))
    for _ in range(rng.randint(1, 60)):
        parts.append(rng.choice(_PIECES))
        r = rng.random()
        if r < 0.15:
            parts.append(" " * rng.randint(1, 60))
        elif r < 0.3:
            parts.append("".join(rng.choice(_SPACES) for _ in range(rng.randint(1, 4))))
        elif r < 0.85:
            parts.append(" ")
    if rng.random() < 0.2:
        parts.append(" " * rng.randint(1, 60))
    return "".join(parts)


def documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [document(rng) for _ in range(n)]
