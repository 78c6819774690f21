"""A faster encoder for byte-level BPE tokenizer files, built on tiktoken, giving the same ids.

``tokenizers`` (the reference) encodes a document in four steps: split off the special added
tokens (``<|endoftext|>``, ``<|padding|>``) from the raw text; NFC-normalize each remaining
piece; split off the normalized added tokens (GPT-NeoX-20B's runs of 2-24 spaces, leftmost and
longest first); then pre-tokenize each piece with GPT-2's pattern and apply BPE to each word.

tiktoken does the last two steps in Rust, several times faster, given its tables: the BPE ranks
(for these files, where every merge creates a token with a higher id than all earlier merges, a
token's id is its merge rank) and the split pattern. The added space runs are folded into that
one call: each run becomes a private-use "sentinel" character that the pattern matches on its
own and whose rank is the run's id; the whitespace rules of the pattern treat a sentinel as the
end of the text, which is what splitting the text there does in the reference. NFC is applied
with the ``tokenizers`` library's own (Rust) normalizer, between special tokens, so the Unicode
version is the reference's.

Everything this relies on is checked when the tables are built (:func:`unsupported`); a file
that breaks an assumption is refused and the reference engine is used. A document that already
contains a sentinel character is encoded by the reference engine.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import numpy as np

# GPT-2's pre-tokenization pattern, as the ByteLevel pre-tokenizer of ``tokenizers`` applies it,
# with the sentinels added (first alternative; excluded from the punctuation class; allowed
# after whitespace as if the text ended there).
_SENTINEL_BASE = 0xF0000
_GPT2_WITH_SENTINELS = (
    r"[{s}]|'s|'t|'re|'ve|'m|'ll|'d| ?\p{{L}}+| ?\p{{N}}+| ?[^\s\p{{L}}\p{{N}}{s}]+"
    r"|\s+(?![^\s{s}])|\s+"
)
_PRIVATE_PLANES_START = 0xF0000  # planes 15-16: where the sentinels live


# Checked against the reference every time the engine is built: the cases where a reproduction
# would most likely go wrong (see tests/test_engines.py for the full differential suite).
PROBES = [
    "Hello world", " leading", "trailing ", "a  b   c    d", " " * 60 + "x" + " " * 25, "x" + " " * 25 + "\n",
    "\t  \n  \x0b\x0c \r\n", "don't it's we're I'M", "<|endoftext|>", "a<|endoftext|>b<|padding|>c",
    "<|endoftext|>\u0338", "cafe\u0301 \u212b \u1e9b\u0323", "数据集 \U0001fae8 👩‍👩‍👧‍👦", "x" * 300,
    "\u3000\u00a0\u2003 spaces", "1,000,000 3.14 ٣٤٥",
]


@functools.lru_cache(maxsize=1)
def _unassigned_table() -> np.ndarray:
    """``table[cp]`` is True for the code points Python's ``unicodedata`` has as unassigned."""
    table = np.zeros(0x110000, bool)
    table[0x80:] = [unicodedata.category(chr(cp)) == "Cn" for cp in range(0x80, 0x110000)]
    return table


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


def _runs_nfc(text: str, cps: np.ndarray, unassigned: np.ndarray, rust_nfc) -> str:
    """NFC of ``text``, run by run of non-ASCII characters, each with the character before it
    (an ASCII character never combines with what precedes it and blocks reordering). Runs with
    a character Python does not know use the reference's normalizer, the others Python's."""
    wide = np.concatenate([[False], cps >= 0x80, [False]])
    edges = np.flatnonzero(wide[1:] != wide[:-1])
    out, last = [], 0
    for a, b in zip(edges[::2].tolist(), edges[1::2].tolist()):
        start = max(a - 1, last)
        out.append(text[last:start])
        piece = text[start:b]
        out.append(rust_nfc(piece) if unassigned[a:b].any() else unicodedata.normalize("NFC", piece))
        last = b
    out.append(text[last:])
    return "".join(out)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: vocabulary characters -> bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def unsupported(spec: dict) -> str | None:
    """Why this tokenizer file cannot be reproduced by the fast engine, or None if it can."""
    norm, pre, model = spec.get("normalizer"), spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    if norm not in (None, {"type": "NFC"}):
        return f"normalizer {norm and norm.get('type')} (only NFC or none)"
    if pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or not pre.get("use_regex", True):
        return "pre-tokenizer is not ByteLevel without prefix space"
    if model.get("type") != "BPE" or model.get("dropout") or model.get("unk_token") is not None \
            or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix") \
            or model.get("byte_fallback") or model.get("ignore_merges"):
        return "model is not plain byte-level BPE"
    post = spec.get("post_processor")
    if post not in (None,) and post.get("type") != "ByteLevel":
        return f"post-processor {post.get('type')} adds tokens"
    vocab, merges = model["vocab"], model["merges"]
    last = -1
    for m in merges:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        rank = vocab.get(a + b)
        if rank is None or rank <= last:
            return "merge ranks are not increasing token ids"
        last = rank
    spaces = []
    for tok in spec.get("added_tokens", []):
        if tok.get("single_word") or tok.get("lstrip") or tok.get("rstrip"):
            return f"added token {tok['content']!r} has word or strip flags"
        if tok["special"]:
            if tok.get("normalized"):
                return f"special token {tok['content']!r} is normalized"
        elif set(tok["content"]) == {" "} and tok.get("normalized", True):
            spaces.append(len(tok["content"]))
        else:
            return f"added token {tok['content']!r} (only special tokens and runs of spaces)"
    if spaces and sorted(spaces) != list(range(2, max(spaces) + 1)):
        return "added space runs are not every length from 2 up"
    return None


class FastEncoder:
    """Encode like ``tokenizers.Tokenizer.encode(text).ids`` for a supported tokenizer file."""

    def __init__(self, spec: dict, reference):
        import tiktoken
        from tokenizers.normalizers import NFC

        reason = unsupported(spec)
        if reason:
            raise ValueError(reason)
        decode = _byte_decoder()
        specials = {t["content"]: t["id"] for t in spec.get("added_tokens", []) if t["special"]}
        special_ids = set(specials.values())
        ranks = {bytes(decode[c] for c in tok): i for tok, i in spec["model"]["vocab"].items()
                 if i not in special_ids}
        runs = sorted(((len(t["content"]), t["id"]) for t in spec.get("added_tokens", [])
                       if not t["special"]), reverse=True)
        self._runs = [(" " * n, chr(_SENTINEL_BASE + n)) for n, _ in runs]
        for n, token_id in runs:
            ranks.pop(b" " * n, None)  # the BPE token for n spaces is unreachable: runs split first
            ranks[chr(_SENTINEL_BASE + n).encode()] = token_id
        sentinels = (f"{re.escape(chr(_SENTINEL_BASE + min(n for n, _ in runs)))}-"
                     f"{re.escape(chr(_SENTINEL_BASE + max(n for n, _ in runs)))}") if runs else "\U000f0000"
        self._enc = tiktoken.Encoding("pileprep-fastbpe", pat_str=_GPT2_WITH_SENTINELS.format(s=sentinels),
                                      mergeable_ranks=ranks, special_tokens=specials)
        self._specials = re.compile("(" + "|".join(map(re.escape, sorted(specials, key=len, reverse=True))) + ")") \
            if specials else None
        self._nfc = NFC().normalize_str if spec.get("normalizer") else None
        self._reference = reference
        self.fallbacks = 0  # documents handed to the reference engine (they held a sentinel)

    def _nfc_piece(self, text: str, cps: np.ndarray) -> str:
        # Unicode's normalization stability policy: for a text of characters assigned in
        # Python's Unicode version, NFC is the same in every later version, so Python's (much
        # faster) quick check and normalizer agree with the Rust one. Texts holding characters
        # Python does not know go to the reference's own normalizer.
        unassigned = _unassigned_table()[cps]
        if unassigned.any():
            return _runs_nfc(text, cps, unassigned, self._nfc)
        if unicodedata.is_normalized("NFC", text):
            return text
        return unicodedata.normalize("NFC", text)

    def _normalize(self, text: str, cps: np.ndarray) -> str:
        if self._nfc is None:
            return text
        if self._specials is not None and "<|" in text:
            # The reference normalizes between special tokens: ">" + U+0338 must not compose.
            pieces = self._specials.split(text)
            return "".join(p if i % 2 else self._nfc_piece(p, _code_points(p))
                           for i, p in enumerate(pieces))
        return self._nfc_piece(text, cps)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` (uint32)."""
        if not text.isascii():  # ASCII is NFC in every Unicode version and holds no sentinel
            cps = _code_points(text)
            if (cps >= _PRIVATE_PLANES_START).any():
                self.fallbacks += 1
                return np.asarray(self._reference.encode(text).ids, np.uint32)
            text = self._normalize(text, cps)
        if "  " in text:
            for run, sentinel in self._runs:  # longest first: leftmost-longest, as the reference
                text = text.replace(run, sentinel)
        return self._enc.encode_to_numpy(text, allowed_special="all")

