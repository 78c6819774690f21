"""The fast engine gives exactly the ids of the reference (`tokenizers`)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pileprep.core.config import with_settings
from pileprep.tokenizer import bpe, fastbpe, nfc, pretokenize
from pileprep.core.errors import ConfigError
from pileprep.jobs.build import build
from pileprep.tokenizer import load_tokenizer, resolve_engine
from pileprep.tokenizer.fast import fast_encoder

from adversarial import documents
from helpers import make_config

ENGINE_OUTPUTS = ("pile_text_document.bin", "pile_text_document.idx", "provenance.parquet",
                  "manifest.json")


@pytest.fixture(scope="module")
def fast(tokenizer_spec):
    return fast_encoder(tokenizer_spec)


def _check(fast, tokenizer, texts, batch=256):
    """Encode in batches, as the build does, and compare every document with the reference."""
    for start in range(0, len(texts), batch):
        chunk = texts[start:start + batch]
        ids, sizes = fast.encode_batch(chunk, eod=0, dtype=np.uint16)
        assert ids.dtype == np.uint16 and len(sizes) == len(chunk)
        ends = np.cumsum(sizes)
        for text, end, size in zip(chunk, ends.tolist(), sizes.tolist()):
            assert ids[end - 1] == 0, repr(text[:200])
            assert ids[end - size:end - 1].tolist() == tokenizer.encode(text).ids, repr(text[:200])


@pytest.mark.slow
def test_adversarial_documents_identical(fast, tokenizer):
    _check(fast, tokenizer, documents(12000, seed=1))


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(["a", "e", " ", "\u0301", "\u0323", "\u0338", ">", "\u212b", "\uac00",
                                 "\u1161", "\u11a8", "ǅ", "\u0958", "\U0001e900", "\u0b47",
                                 "\u0b3e"]), max_size=30).map("".join) | st.text(max_size=60))
def test_nfc_by_runs_equals_whole_text_nfc(text):
    """Cutting before the character preceding each non-ASCII run changes nothing (marks that
    compose with an ASCII letter, reorder, or compose with a non-ASCII starter)."""
    import unicodedata

    assert nfc.nfc(text) == unicodedata.normalize("NFC", text)


def test_nfc_by_runs_on_documents():
    import unicodedata

    for text in documents(3000, seed=11):
        assert nfc.nfc(text) == unicodedata.normalize("NFC", text), repr(text[:200])


def test_pre_tokenizer_alone_matches_the_reference(tokenizer):
    """The compiled GPT-2 split against the reference's ByteLevel pre-tokenizer (no added
    tokens, no normalization), pieces compared in the reference's byte-level alphabet."""
    to_chars = fastbpe._byte_chars()
    for text in documents(3000, seed=5):
        ours = [p.encode().decode("latin-1").translate(to_chars) for p in pretokenize.split(text)]
        assert ours == [p for p, _ in tokenizer.pre_tokenizer.pre_tokenize_str(text)], repr(text[:200])


@pytest.mark.slow
def test_every_code_point(fast, tokenizer):
    """Every Unicode scalar value, shuffled so that each meets varied neighbours, with spaces,
    apostrophes and digits strewn in: classes, NFC and BPE for characters of every version."""
    rng = random.Random(7)
    points = [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000]
    rng.shuffle(points)
    texts = []
    for start in range(0, len(points), 4000):
        chars = [chr(cp) for cp in points[start:start + 4000]]
        for _ in range(600):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice([" ", "  ", "'s", "'", "7", "\n", "a"]))
        texts.append("".join(chars))
    _check(fast, tokenizer, texts, batch=32)


def test_memo_growth_and_clearing_do_not_change_ids(tokenizer_spec, tokenizer):
    """A memo cleared before most batches, and one that must grow from its smallest size in
    the middle of a batch (more distinct words than entries, a word longer than the arena),
    give the same ids."""
    spec = json.loads(load_tokenizer(tokenizer_spec).to_str())
    enc = fastbpe.FastEncoder(spec, tokenizer)
    enc.cache.max_entries, enc.cache.max_code_points = 500, 5000
    _check(enc, tokenizer, documents(600, seed=3), batch=40)
    assert enc.cache.clears >= 5

    enc = fastbpe.FastEncoder(spec, tokenizer)
    entries, arena = len(enc.cache.cp_off) - 1, len(enc.cache.cp_arena)
    letters = "abcdefghijklmnopqrstuvwxyz"
    distinct = " ".join(letters[i % 26] + letters[i // 26 % 26] + letters[i // 676 % 26]
                        + letters[i // 17576] for i in range(3 * entries))
    _check(enc, tokenizer, ["intro", distinct, "Q" * (2 * arena) + " end", "x" * 300], batch=4)
    assert len(enc.cache.cp_off) > 3 * entries and len(enc.cache.cp_arena) > 2 * arena


def test_space_runs_at_every_length_and_place(fast, tokenizer):
    texts = []
    for n in range(1, 61):
        for ctx in ("{}", "a{}", "{}b", "a{}b", "\t{}\n", "\n{}\t", "x{}\x0b", "{}<|endoftext|>",
                    "<|padding|>{}", "é{}\u0301", "'s{}'ll"):
            texts.append(ctx.format(" " * n))
    _check(fast, tokenizer, texts)


def test_synthetic_corpus_identical(fast, tokenizer, clean_corpus):
    import orjson
    import zstandard

    with open(clean_corpus / "00.jsonl.zst", "rb") as f:
        lines = zstandard.ZstdDecompressor().stream_reader(f).read().splitlines()
    _check(fast, tokenizer, [orjson.loads(line)["text"] for line in lines])


_ALPHABET = st.sampled_from(list("aZ09 '\t\n\r\x0b\x0c.!-_<>|") + [
    "  ", "   ", " " * 24, " " * 25, "<|endoftext|>", "<|padding|>", "\u0301", "\u0338", "é",
    "\u3000", "\u00a0", "\u2028", "数", "🙂", "\u200d", "\U0001fae8", "ß", "İ", "\ufffd", "'s",
    "'ll", "٣", "½"])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ALPHABET, max_size=40).map("".join) | st.text(max_size=60))
def test_property_identical(fast, tokenizer, text):
    assert fast.encode(text).tolist() == tokenizer.encode(text).ids


def test_private_use_and_noncharacters(fast, tokenizer):
    _check(fast, tokenizer, ["private \U000f0003 use  and \U0010fffd plane \uffff\ufdd0 \ue000"])


def test_build_identical_with_both_engines(dirty_corpus, dirty_build, tokenizer_spec, tmp_path):
    out = {}
    for engine in ("reference", "fast"):
        cfg = make_config([dirty_corpus], tmp_path / engine, tokenizer_spec, partition_bytes=50_000)
        cfg = with_settings(cfg, {"tokenize.engine": engine})
        build(cfg)
        out[engine] = {n: (tmp_path / engine / n).read_bytes() for n in ENGINE_OUTPUTS}
    assert out["reference"] == out["fast"]
    assert out["fast"] == {n: (dirty_build / n).read_bytes() for n in ENGINE_OUTPUTS}


@pytest.mark.parametrize("change,reason", [
    (lambda s: s["pre_tokenizer"].update(add_prefix_space=True), "pre-tokenizer"),
    (lambda s: s.update(normalizer={"type": "NFKC"}), "normalizer"),
    (lambda s: s["added_tokens"].append({"id": 50277, "content": "foo", "special": False,
                                         "single_word": False, "lstrip": False, "rstrip": False,
                                         "normalized": True}), "foo"),
    (lambda s: s["model"].update(dropout=0.1), "BPE without dropout"),
    (lambda s: s["model"].update(ignore_merges=True), "ignore_merges"),
])
def test_unsupported_files_fall_back_to_reference(tokenizer_spec, tmp_path, change, reason):
    spec = json.loads(load_tokenizer(tokenizer_spec).to_str())
    change(spec)
    assert reason in fastbpe.unsupported(spec)
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(spec))
    engine, why = resolve_engine(str(path), "auto")
    assert engine == "reference" and reason in why
    with pytest.raises(ConfigError, match="fast cannot reproduce"):
        resolve_engine(str(path), "fast")


@pytest.mark.parametrize("option", ["continuing_subword_prefix", "end_of_word_suffix",
                                    "byte_fallback"])
def test_bpe_options_the_merge_loop_does_not_apply_are_refused(tokenizer_spec, option):
    # Checked on the file only: `tokenizers` itself cannot load the 20B vocabulary with them.
    spec = json.loads(load_tokenizer(tokenizer_spec).to_str())
    spec["model"][option] = "##" if option != "byte_fallback" else True
    assert option in fastbpe.unsupported(spec)


def test_the_shipped_tokenizer_is_supported(tokenizer_spec):
    assert fastbpe.unsupported(json.loads(load_tokenizer(tokenizer_spec).to_str())) is None
    assert resolve_engine(tokenizer_spec, "auto")[0] == "fast"


def test_a_passed_engine_check_is_remembered_for_that_file_and_code(tokenizer_spec, tmp_path,
                                                                    monkeypatch):
    """A build's driver checks the engine without building it when this file passed this code's
    check before; another file (one byte more) is checked anew, and a refusal is not kept."""
    from pileprep.tokenizer import fast

    monkeypatch.setenv("PILEPREP_CACHE_DIR", str(tmp_path / "cache"))
    copy = tmp_path / "tok.json"
    copy.write_bytes(Path(tokenizer_spec).read_bytes())
    fast.FastEngine().check(str(copy))  # built, probed, remembered
    remembered = list((tmp_path / "cache" / "engine-checks").iterdir())
    assert len(remembered) == 1

    def refuse(spec):
        raise fast.EngineUnavailable("refused")

    monkeypatch.setattr(fast, "fast_encoder", refuse)
    fast.FastEngine().check(str(copy))  # remembered: nothing built
    copy.write_bytes(copy.read_bytes() + b" ")
    with pytest.raises(fast.EngineUnavailable):
        fast.FastEngine().check(str(copy))
    assert list((tmp_path / "cache" / "engine-checks").iterdir()) == remembered


def test_derived_tables_are_rebuilt_when_damaged_and_kept_when_unwritable(tmp_path, monkeypatch):
    from pileprep.core import tables

    calls = []

    def build():
        calls.append(1)
        return np.arange(10, dtype=np.uint8)

    monkeypatch.setenv("PILEPREP_CACHE_DIR", str(tmp_path / "cache"))
    assert tables.cached_table("t-1", build, np.uint8, 10).tolist() == list(range(10))
    assert tables.cached_table("t-1", build, np.uint8, 10).tolist() == list(range(10))
    assert len(calls) == 1  # the second call read the file
    (tmp_path / "cache" / "t-1.npy").write_bytes(b"not a numpy file")
    assert tables.cached_table("t-1", build, np.uint8, 10).tolist() == list(range(10))
    assert len(calls) == 2 and np.load(tmp_path / "cache" / "t-1.npy").tolist() == list(range(10))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("PILEPREP_CACHE_DIR", str(blocker / "sub"))  # cannot be created
    assert tables.cached_table("t-1", build, np.uint8, 10).tolist() == list(range(10))
    assert len(calls) == 3


@pytest.fixture(scope="module")
def real_text():
    """About 3 MB of real text from this machine (the benchmark corpus builder's small roots):
    code, man pages, docs and licences, with the identifiers, numbers and markup that the
    generated corpus lacks."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    import realtext

    texts, size = [], 0
    for text, _ in realtext.documents(realtext.roots(small=True), 50_000):
        texts.append(text)
        size += len(text)
        if size > 3_000_000:
            break
    assert size > 1_000_000, "too little real text found on this machine"
    return texts


def test_real_text_identical(fast, tokenizer, real_text):
    _check(fast, tokenizer, real_text)


@pytest.fixture(scope="module")
def merges(tokenizer):
    spec = json.loads(tokenizer.to_str())
    to_chars = fastbpe._byte_chars()
    return bpe.MergeTable.from_model(spec["model"], {b: chr(c) for b, c in to_chars.items()})


def test_compiled_bpe_equals_the_reference_model_on_every_real_word(merges, tokenizer, real_text):
    """Every distinct pre-token of the real text, merged by the compiled loop alone, gets the
    ids the reference's own BPE model gives it (no memo, no fallback for long words)."""
    words = sorted({w for text in real_text[:300] for w in pretokenize.split(text)})
    words += ["x" * 700, "ab" * 400, "é" * 300]  # past LONG_WORD: the loop must still be right
    _assert_compiled_bpe(merges, tokenizer, words)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=40))
def test_compiled_bpe_equals_the_reference_model_on_any_word(merges, tokenizer, words):
    _assert_compiled_bpe(merges, tokenizer, words)


def _assert_compiled_bpe(table, tokenizer, words):
    to_chars = fastbpe._byte_chars()
    cps = np.frombuffer("".join(words).encode("utf-32-le"), np.uint32)
    offsets = np.zeros(len(words) + 1, np.int64)
    offsets[1:] = np.cumsum([len(w) for w in words])
    given = np.full(len(words), -1, np.int64)
    out_off = np.zeros(len(words) + 1, np.int64)
    out = np.zeros(4 * len(cps), np.uint32)
    bpe.encode_words(cps, offsets, table.byte_ids, table.vocab_size, table.keys, table.ranks,
                     table.merged, given, np.zeros(1, np.int64), np.zeros(0, np.int64),
                     out_off, out)
    for w, word in enumerate(words):
        byte_level = word.encode().decode("latin-1").translate(to_chars)
        expected = [t.id for t in tokenizer.model.tokenize(byte_level)]
        assert out[out_off[w]:out_off[w + 1]].tolist() == expected, repr(word)


def test_memo_keeps_its_most_used_words_when_pruned(tokenizer_spec, tokenizer):
    """Pruning keeps the most used words (their ids still right) and drops the rest."""
    spec = json.loads(tokenizer.to_str())
    enc = fastbpe.FastEncoder(spec, tokenizer)
    enc.cache.max_entries, enc.cache.keep = 50, 3
    hot = " the the the of of of of and and and and and"
    rare = "".join(f" zq{a}{b}" for a in "abcdefghij" for b in "abcdefghij")  # 100 words
    _check(enc, tokenizer, [hot + rare], batch=1)
    words = enc.new_words
    _check(enc, tokenizer, [" the of and"], batch=1)  # prunes first, then finds the 3 kept
    assert enc.cache.clears == 1 and enc.cache.entries == 3
    assert enc.new_words == words
    _check(enc, tokenizer, [rare], batch=1)  # the rare words were dropped: BPE runs again
    assert enc.new_words > words + 50


def test_encoder_tables_are_cached_and_a_damaged_cache_is_derived_again(tokenizer_spec, tokenizer,
                                                                         tmp_path, monkeypatch):
    """A worker builds its encoder from the tables an earlier build derived from the same file
    and code (cache dir): they must be exactly what deriving gives, and the encoder from them
    must encode as the reference does; a damaged cache file, or one whose encoder fails the
    probes, is derived again and replaced."""
    from pileprep.tokenizer import fast as fast_mod

    build = fast_mod.fast_encoder.__wrapped__  # not the process's cached encoder
    monkeypatch.setenv("PILEPREP_CACHE_DIR", str(tmp_path / "cache"))
    derived = fastbpe.FastEncoder.tables(json.loads(tokenizer.to_str()))
    build(tokenizer_spec)  # derives and saves
    (saved,) = (tmp_path / "cache" / "engine-tables").iterdir()

    def saved_equals_derived() -> bool:
        with np.load(saved) as cached:
            return sorted(cached.files) == sorted(derived) and all(
                np.array_equal(cached[name], array) for name, array in derived.items())

    assert saved_equals_derived()
    with monkeypatch.context() as m:  # from the cache: nothing derived
        m.setattr(fastbpe.FastEncoder, "tables", staticmethod(lambda spec: pytest.fail("derived")))
        from_cache = build(tokenizer_spec)
    _check(from_cache, tokenizer, documents(300, seed=7))
    saved.write_bytes(b"damaged")
    _check(build(tokenizer_spec), tokenizer, documents(50, seed=8))
    assert saved_equals_derived()
    wrong = {**derived, "short": np.zeros_like(derived["short"])}  # loads, but encodes wrongly
    with open(saved, "wb") as f:
        np.savez(f, **wrong)
    _check(build(tokenizer_spec), tokenizer, documents(50, seed=9))
    assert saved_equals_derived()
