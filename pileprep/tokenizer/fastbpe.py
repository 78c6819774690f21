"""The fast tokenizer engine: the ids of ``tokenizers`` for byte-level BPE files, several times faster.

``tokenizers`` (the reference) encodes a document in four steps: split off the special added
tokens (``<|endoftext|>``, ``<|padding|>``) from the raw text; NFC-normalize each remaining
piece; split off the normalized added tokens (GPT-NeoX-20B's runs of 2-24 spaces, leftmost and
longest first); then pre-tokenize each piece with GPT-2's pattern and apply BPE to each word.

This engine does the same steps, organised for throughput. A batch of documents is normalized
(Python's NFC where it provably equals the reference's, the reference's own normalizer
elsewhere), joined into one array of code points, and scanned by one compiled pass
(:func:`_scan`) that splits off the space runs, pre-tokenizes (:mod:`pileprep.tokenizer.pretokenize`) and
looks every pre-token up in a memo (:mod:`pileprep.tokenizer.wordcache`), except ASCII words of
one or two characters, whose ids come from a table. Only pre-tokens the memo does not hold reach
BPE, compiled over the file's merge table (:mod:`pileprep.tokenizer.bpe`, the reference model's
rule; words of 512 code points and more go to the reference's own model). A second compiled pass
(:func:`_emit`) writes the documents' ids, each followed by the end-of-document id, in the
dataset's dtype.

What this relies on is checked when the engine is built (:func:`unsupported`); a file that
breaks an assumption is refused and the reference engine is used.
"""

from __future__ import annotations

import json
import re

import numba
import numpy as np

from pileprep.tokenizer import bpe, nfc, pretokenize, wordcache
from pileprep.tokenizer.pretokenize import piece_end
from pileprep.tokenizer.wordcache import find_or_add

# Checked against the reference every time the engine is built: the cases where a reproduction
# would most likely go wrong (see tests/test_engines.py for the full differential suite).
PROBES = [
    "Hello world", " leading", "trailing ", "a  b   c    d", " " * 60 + "x" + " " * 25, "x" + " " * 25 + "\n",
    "\t  \n  \x0b\x0c \r\n", "don't it's we're I'M", "<|endoftext|>", "a<|endoftext|>b<|padding|>c",
    "<|endoftext|>\u0338", "cafe\u0301 \u212b \u1e9b\u0323", "数据集 \U0001fae8 👩‍👩‍👧‍👦", "x" * 300,
    "\u3000\u00a0\u2003 spaces", "1,000,000 3.14 ٣٤٥",
]


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
    if model.get("type") != "BPE" or model.get("dropout"):
        # A word's ids must be a function of the word, or the memo would change them.
        return "model is not BPE without dropout"
    for option in ("continuing_subword_prefix", "end_of_word_suffix", "byte_fallback",
                   "ignore_merges"):
        if model.get(option):
            return f"BPE option {option} (the compiled merge loop does not apply it)"
    post = spec.get("post_processor")
    if post not in (None,) and post.get("type") != "ByteLevel":
        return f"post-processor {post.get('type')} adds tokens"
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


_BLANK = 32


@numba.njit(cache=True, nogil=True, inline="always")
def _short_row(cps, i, j):
    """Row of ``short`` for the word ``cps[i:j]`` if it is one or two ASCII characters, else -1:
    row c for the character c, 128 + 128 * c + d for the pair c, d."""
    if j - i == 1 and cps[i] < 128:
        return np.int64(cps[i])
    if j - i == 2 and cps[i] < 128 and cps[i + 1] < 128:
        return 128 + 128 * np.int64(cps[i]) + np.int64(cps[i + 1])
    return -1


def short_words(table: bpe.MergeTable) -> np.ndarray:
    """``(128 + 128 * 128, 2)`` ids of every one- and two-character ASCII word (second column
    -1 when the word is one token), merged by :mod:`.bpe` like any other word."""
    words = [chr(c) for c in range(128)] + [chr(c) + chr(d) for c in range(128)
                                            for d in range(128)]
    cps = np.frombuffer("".join(words).encode("utf-32-le"), np.uint32)
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in words])]).astype(np.int64)
    out_off = np.zeros(len(words) + 1, np.int64)
    out = np.zeros(4 * len(cps), np.int64)
    bpe.encode_words(cps, offsets, table.byte_ids, table.vocab_size, table.keys, table.ranks,
                     table.merged, np.full(len(words), -1, np.int64), np.zeros(1, np.int64),
                     np.zeros(0, np.int64), out_off, out)
    short = np.full((len(words), 2), -1, np.int64)
    for w in range(len(words)):
        ids = out[out_off[w]:out_off[w + 1]]
        short[w, :len(ids)] = ids
    return short


@numba.njit(cache=True, nogil=True)
def _scan_segment(cps, cls, a, b, run_ids, short, hot, slots, cp_off, cp_arena, state, items, n):
    """Items of ``cps[a:b]`` (one text between special tokens) from ``items[n]`` on; returns
    the new item count, or -1 when the memo is full. An item is a memo entry (>= 0) or a
    token id ``t`` stored as ``-t - 1`` (added tokens, and the ids of ASCII words of one or two
    characters, half of all pre-tokens in real text, read from ``short`` without the memo)."""
    longest = len(run_ids) - 1
    i = a
    while i < b:
        # The stretch up to the next run of 2+ spaces is pre-tokenized as if it were the whole
        # text: the reference splits added tokens off before pre-tokenizing.
        r = i
        if longest >= 2:
            while r + 1 < b and not (cps[r] == _BLANK and cps[r + 1] == _BLANK):
                r += 1
            if r + 1 >= b:
                r = b
        else:
            r = b
        while i < r:
            j = piece_end(cps, cls, i, r)
            row = _short_row(cps, i, j)
            if row >= 0:
                items[n] = -short[row, 0] - 1
                n += 1
                if short[row, 1] >= 0:
                    items[n] = -short[row, 1] - 1
                    n += 1
            else:
                e = find_or_add(cps, i, j, hot, slots, cp_off, cp_arena, state)
                if e < 0:
                    return -1
                items[n] = e
                n += 1
            i = j
        k = r
        while k < b and cps[k] == _BLANK:
            k += 1
        left = k - r
        while left >= 2:  # leftmost-longest: 24, 24, ..., then the rest; a lone space stays text
            take = min(left, longest)
            items[n] = -run_ids[take] - 1
            n += 1
            left -= take
        i = k - left
    return n


@numba.njit(cache=True, nogil=True)
def _scan(cps, cls, seg_end, seg_after, doc_seg_end, d, run_ids, short, hot, slots, cp_off, cp_arena,
          state, items, doc_item_end):
    """Items of documents ``d, d + 1, ...``; returns the first document not done (the memo
    needs to grow before it is redone) or the number of documents."""
    while d < len(doc_seg_end):
        n = doc_item_end[d - 1] if d > 0 else 0
        for s in range(doc_seg_end[d - 1] if d > 0 else 0, doc_seg_end[d]):
            n = _scan_segment(cps, cls, seg_end[s - 1] if s > 0 else 0, seg_end[s], run_ids,
                              short, hot, slots, cp_off, cp_arena, state, items, n)
            if n < 0:
                return d
            if seg_after[s] >= 0:
                items[n] = -seg_after[s] - 1
                n += 1
        doc_item_end[d] = n
        d += 1
    return d


@numba.njit(cache=True, nogil=True)
def _sizes(items, doc_item_end, id_off, extra):
    sizes = np.empty(len(doc_item_end), np.int64)
    k = 0
    for d in range(len(doc_item_end)):
        total = extra
        while k < doc_item_end[d]:
            e = items[k]
            total += id_off[e + 1] - id_off[e] if e >= 0 else 1
            k += 1
        sizes[d] = total
    return sizes


@numba.njit(cache=True, nogil=True)
def _emit(items, doc_item_end, id_off, id_arena, eod, out):
    k, p = 0, 0
    for d in range(len(doc_item_end)):
        while k < doc_item_end[d]:
            e = items[k]
            if e >= 0:
                for q in range(id_off[e], id_off[e + 1]):
                    out[p] = id_arena[q]
                    p += 1
            else:
                out[p] = -e - 1
                p += 1
            k += 1
        if eod >= 0:
            out[p] = eod
            p += 1


def _byte_chars() -> dict[int, int]:
    """``str.translate`` table from bytes (as latin-1 characters) to the ByteLevel alphabet."""
    return {b: ord(c) for c, b in _byte_decoder().items()}


class FastEncoder:
    """Encode like ``tokenizers.Tokenizer.encode(text).ids`` for a supported tokenizer file."""

    def __init__(self, spec: dict, reference):
        self._setup(self.tables(spec), reference)

    @staticmethod
    def tables(spec: dict) -> dict[str, np.ndarray]:
        """Everything the encoder derives from a ``tokenizer.json`` (raises ValueError when it
        is unsupported), as arrays: what :meth:`from_tables` rebuilds it from (a cache of them
        spares a worker parsing the file and deriving the merge table, 0.25 s)."""
        reason = unsupported(spec)
        if reason:
            raise ValueError(reason)
        added = spec.get("added_tokens", [])
        specials = {t["content"]: t["id"] for t in added if t["special"]}
        runs = {len(t["content"]): t["id"] for t in added if not t["special"]}
        run_ids = np.full(max(runs, default=0) + 1, -1, np.int64)
        for n, token_id in runs.items():
            run_ids[n] = token_id
        to_chars = _byte_chars()
        merges = bpe.MergeTable.from_model(spec["model"], {b: chr(c) for b, c in to_chars.items()})
        about = {"specials": specials, "nfc": bool(spec.get("normalizer"))}
        return {"about": np.frombuffer(json.dumps(about).encode(), np.uint8), "run_ids": run_ids,
                "vocab_size": np.int64(merges.vocab_size), "byte_ids": merges.byte_ids,
                "keys": merges.keys, "ranks": merges.ranks, "merged": merges.merged,
                "short": short_words(merges)}

    @classmethod
    def from_tables(cls, tables, reference) -> "FastEncoder":
        enc = cls.__new__(cls)
        enc._setup(tables, reference)
        return enc

    def _setup(self, tables, reference) -> None:
        from tokenizers.normalizers import NFC

        about = json.loads(bytes(tables["about"]).decode())
        specials = about["specials"]
        self._run_ids = np.asarray(tables["run_ids"], np.int64)
        self._specials = specials
        self._special_split = re.compile(
            "(" + "|".join(map(re.escape, sorted(specials, key=len, reverse=True))) + ")") \
            if specials else None
        self._nfc = NFC().normalize_str if about["nfc"] else None
        self._classes = pretokenize.class_table()
        self._tokenize_word = reference.model.tokenize
        self._to_chars = _byte_chars()
        self._merges = bpe.MergeTable(int(tables["vocab_size"]), *(
            np.asarray(tables[k], np.int64) for k in ("byte_ids", "keys", "ranks", "merged")))
        self._short = np.asarray(tables["short"], np.int64)
        self.cache = wordcache.WordCache()
        # Items scanned (pre-tokens; added tokens and the tokens of short ASCII words count one
        # each), and the words BPE was run for.
        self.words = self.new_words = 0

    # -- normalization -------------------------------------------------------------------

    def _nfc_piece(self, text: str) -> str:
        return nfc.nfc(text, self._nfc) if self._nfc is not None else text

    def _segments(self, text: str, parts: list, seg_len: list, seg_after: list) -> int:
        """Append ``text``'s normalized pieces between special tokens; return their number."""
        if not any(special in text for special in self._specials):
            piece = self._nfc_piece(text)
            parts.append(piece)
            seg_len.append(len(piece))
            seg_after.append(-1)
            return 1
        # The reference normalizes between special tokens: ">" + U+0338 must not compose.
        pieces = self._special_split.split(text)
        for i in range(0, len(pieces), 2):
            piece = self._nfc_piece(pieces[i])
            parts.append(piece)
            seg_len.append(len(piece))
            seg_after.append(self._specials[pieces[i + 1]] if i + 1 < len(pieces) else -1)
        return (len(pieces) + 1) // 2

    # -- BPE of new words ----------------------------------------------------------------

    def _bpe(self, words: list[str]) -> list[list[int]]:
        tokenize, table = self._tokenize_word, self._to_chars
        return [[t.id for t in tokenize(w.encode().decode("latin-1").translate(table))]
                for w in words]

    # -- encoding ------------------------------------------------------------------------

    def encode_batch(self, texts: list[str], eod: int = -1, dtype=np.uint32):
        """``(ids, sizes)``: all documents' ids in one array of ``dtype``, each document
        followed by ``eod`` unless it is negative, and each document's count."""
        parts, seg_len, seg_after, doc_segs = [], [], [], []
        for text in texts:
            doc_segs.append(self._segments(text, parts, seg_len, seg_after))
        cps = np.frombuffer("".join(parts).encode("utf-32-le"), np.uint32)
        seg_end = np.cumsum(np.asarray(seg_len, np.int64))
        seg_after_arr = np.asarray(seg_after, np.int64)
        doc_seg_end = np.cumsum(np.asarray(doc_segs, np.int64))
        items = np.empty(len(cps) + len(seg_len), np.int64)
        doc_item_end = np.empty(len(texts), np.int64)
        cache = self.cache
        cache.start_batch()
        d = 0
        while True:
            d = _scan(cps, self._classes, seg_end, seg_after_arr, doc_seg_end, d, self._run_ids,
                      self._short, cache.hot, cache.slots, cache.cp_off, cache.cp_arena, cache.state,
                      items, doc_item_end)
            if d == len(texts):
                break
            cache.grow()
        self.new_words += cache.resolve(self._merges, self._bpe)
        self.words += int(doc_item_end[-1]) if len(texts) else 0
        sizes = _sizes(items, doc_item_end, cache.id_off, 1 if eod >= 0 else 0)
        out = np.empty(int(sizes.sum()), dtype)
        _emit(items, doc_item_end, cache.id_off, cache.id_arena, eod, out)
        return out, sizes

    def encode(self, text: str) -> np.ndarray:
        """Token ids of one text (uint32)."""
        return self.encode_batch([text])[0]
