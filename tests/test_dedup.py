"""Near-duplicate removal: datasketch-compatible signatures, recall and precision on pairs of
known Jaccard, determinism, and what reaches the .bin."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash, MinHashLSH

from pileprep.core.config import DedupConfig, with_settings
from pileprep.core.errors import ConfigError
from pileprep.dedup import minhash, steps
from pileprep.jobs.build import build
from pileprep.jobs.dedup_only import dedup_only

from helpers import make_config
from dedup_ref import pair_corpus, shingles
from megatron_ref import read_documents

ADVERSARIAL = [
    "", " ", "\n\t \u3000", "one", "two words", "Exactly five words in here",
    "Café CAFE\u0301 cafe\u0301 ÉCOLE école  Straße STRASSE",
    "tabs\tand\r\nnewlines\u2028and nbsp\u00a0here and more words to make shingles",
    "emoji 🙂🚀 👩‍👩‍👧‍👦 and 数据 集的 去重 是 训练", "a " * 300,
    "x" * 5000 + " tail words one two three four five six",
    "control\x00bytes\x01 stay\x1b in words\x1c but\x1dthese\x1e are\x1f spaces\x0b\x0c ok",
    "\u2003em\u2002spaces\u3000ideographic\u00a0nbsp\u2028line\u0085nel and words",
    "ΣΊΣΥΦΟΣ ΟΔΟΣ final sigma İstanbul ǅ ﬁ",
    # lowered by the compiled pass's table: Kelvin sign to ASCII, 2- to 3-byte mappings
    # (U+023A), the capital sharp s, astral letters (Deseret), Cherokee, titlecase digraphs
    "\u212a elvin ÀÉÎÕÜ ÇA ΑΒΓΔ \u023a\u023e ẞ \U00010400\U00010401 \u13a0\u13a1 ǄǅǆǇ words",
]


def _datasketch_signature(text: str, num_perm: int, seed: int, n: int = 5) -> np.ndarray:
    m = MinHash(num_perm=num_perm, seed=seed, scheme="affine32", hashfunc=minhash.shingle_hash)
    m.update_batch(sorted(shingles(text, n)))
    return m.hashvalues


@pytest.mark.parametrize("num_perm,seed", [(128, 1), (64, 42)])
def test_signatures_equal_datasketch(num_perm, seed, clean_corpus):
    rng = random.Random(seed)
    texts = list(ADVERSARIAL)
    import orjson
    import zstandard

    with open(clean_corpus / "01.jsonl.zst", "rb") as f:
        lines = zstandard.ZstdDecompressor().stream_reader(f).read().splitlines()
    texts += [orjson.loads(line)["text"] for line in rng.sample(lines, 60)]
    sig, has = minhash.signatures(texts, num_perm, seed)
    for text, row, flag in zip(texts, sig, has):
        assert flag == bool(shingles(text))
        assert np.array_equal(row, _datasketch_signature(text, num_perm, seed)), text[:60]


def test_signatures_do_not_depend_on_batching():
    texts = ADVERSARIAL * 3
    whole, _ = minhash.signatures(texts)
    pieces = np.concatenate([minhash.signatures(texts[i:i + 4])[0] for i in range(0, len(texts), 4)])
    assert np.array_equal(whole, pieces)


@pytest.mark.parametrize("threshold", [0.5, 0.87, 0.95])
def test_lsh_parameters_are_datasketchs_optimum(threshold):
    for verify, weights in ((True, (0.05, 0.95)), (False, (0.5, 0.5))):
        lsh = MinHashLSH(threshold=threshold, num_perm=128, weights=weights)
        assert minhash.banding(DedupConfig(threshold=threshold, verify=verify)) == (lsh.b, lsh.r)


def test_components_match_union_find(tmp_path):
    rng = np.random.default_rng(3)
    edges = np.zeros(400, steps.EDGE_ROW)
    a = rng.integers(0, 300, 400)
    b = rng.integers(0, 300, 400)
    keep = a != b
    edges = edges[keep]
    edges["a"], edges["b"] = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    edges["sim"] = rng.uniform(0.8, 1.0, len(edges))
    np.save(tmp_path / "e.npy", edges)
    steps.components([str(tmp_path / "e.npy")], str(tmp_path / "r.npy"))
    got = np.load(tmp_path / "r.npy")
    parent = list(range(300))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(edges["a"], edges["b"]):
        rx, ry = find(int(x)), find(int(y))
        parent[max(rx, ry)] = min(rx, ry)
    members = {}
    for x in set(edges["a"].tolist()) | set(edges["b"].tolist()):
        members.setdefault(find(x), []).append(x)
    expected = {x: min(m) for m in members.values() for x in m if x != min(m)}
    assert dict(zip(got["gid"].tolist(), got["kept"].tolist())) == expected
    for row in got:
        mine = edges[(edges["a"] == row["gid"]) | (edges["b"] == row["gid"])]
        assert row["sim"] == pytest.approx(mine["sim"].max())
        assert row["direct"] == bool(((mine["a"] == row["kept"]) & (mine["b"] == row["gid"])).any())


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    truth = pair_corpus(out / "shards")
    return out, truth


def _dedup(inputs, out, tokenizer_spec, **kw):
    cfg = make_config(inputs, out, tokenizer_spec, partition_bytes=kw.pop("partition_bytes", 400_000),
                      workers=kw.pop("workers", 1), scheduler=kw.pop("scheduler", "synchronous"))
    cfg = with_settings(cfg, {f"dedup.{k}": v for k, v in kw.items()})
    return dedup_only(cfg)


def _removed(out) -> dict:
    t = pq.read_table(out / "duplicates.parquet").to_pylist()
    return {(r["source"], r["line"]): r for r in t}


def test_recall_and_precision_on_pairs_of_known_similarity(pairs, tokenizer_spec):
    out, truth = pairs
    assert len(truth["high"]) >= 500 and len(truth["low"]) >= 500
    summary = _dedup([out / "shards"], out / "dedup", tokenizer_spec)
    removed = _removed(out / "dedup")

    def joined(first, second):
        row = removed.get(second)
        return row is not None and (row["kept_source"], row["kept_line"]) == first

    assert all(joined(a, b) for a, b, _ in truth["exact"])
    high = sum(joined(a, b) for a, b, _ in truth["high"]) / len(truth["high"])
    low = sum(joined(a, b) for a, b, _ in truth["low"]) / len(truth["low"])
    assert high >= 0.98, high
    assert low <= 0.01, low
    # Nothing else is removed: the filler documents are unrelated.
    planted = {b for kind in truth.values() for _, b, _ in kind}
    assert set(removed) <= planted
    assert summary["removed"] == len(removed)
    for (a, b, j) in truth["high"]:
        if joined(a, b):
            assert abs(removed[b]["similarity"] - j) < 0.15


@pytest.mark.slow
@pytest.mark.parametrize("verify", [True, False])
def test_dedup_output_independent_of_workers_and_partitions(pairs, tokenizer_spec, monkeypatch,
                                                            verify):
    """All steps at once in the driver (a small corpus), and as rounds of tasks over
    partitions and buckets on 2 workers: the same files and counts."""
    from pileprep.stages import dedup as dedup_stage

    out, _ = pairs
    one = _dedup([out / "shards"], out / f"d1{verify}", tokenizer_spec, partition_bytes=4_000_000,
                 verify=verify)
    monkeypatch.setattr(dedup_stage, "LOCAL_BYTES", 0)
    monkeypatch.setattr(dedup_stage, "BUCKET_ROWS", 5_000)  # several buckets
    tasks = _dedup([out / "shards"], out / f"d2{verify}", tokenizer_spec, partition_bytes=150_000,
                   workers=2, scheduler=None, verify=verify)
    assert tasks["buckets"] > 1 and one["buckets"] == 1
    assert {k: v for k, v in one.items() if k != "buckets"} == \
        {k: v for k, v in tasks.items() if k != "buckets"}
    for name in ("duplicates.parquet", "dedup_report.md", "dedup_similarity.svg",
                 "dedup_removal_by_subset.svg"):
        assert (out / f"d1{verify}" / name).read_bytes() == (out / f"d2{verify}" / name).read_bytes(), name


@pytest.mark.slow
def test_other_threshold_reuses_signatures_and_no_verify(pairs, tokenizer_spec, capsys):
    out, truth = pairs
    _dedup([out / "shards"], out / "t", tokenizer_spec)
    cfg = make_config([out / "shards"], out / "t", tokenizer_spec, partition_bytes=400_000)
    cfg = with_settings(cfg, {"dedup.threshold": 0.7, "quiet": False})
    loose = dedup_only(cfg)
    assert "minhash: reusing" in capsys.readouterr().err
    assert loose["bands"] != minhash.banding(DedupConfig())[0]
    # At 0.7 some of the low pairs (Jaccard 0.7-0.75) join too.
    assert loose["removed"] > len(truth["high"])
    cfg = with_settings(cfg, {"dedup.threshold": 0.87, "dedup.verify": False})
    unverified = dedup_only(cfg)
    assert unverified["verified_pairs"] == unverified["candidate_pairs"]
    assert np.isnan(pq.read_table(out / "t" / "duplicates.parquet").column("similarity").to_numpy()).all()


@pytest.fixture(scope="module")
def dedup_build(clean_corpus, clean_build, tokenizer_spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("dedup_build")
    cfg = make_config([clean_corpus], out, tokenizer_spec, partition_bytes=300_000, name="")
    cfg = with_settings(cfg, {"dedup.enabled": True})
    build(cfg)
    return out


def test_dedup_into_a_build_leaves_the_build_as_it_is(clean_corpus, dedup_build, tokenizer_spec,
                                                      tmp_path, capsys):
    """``pileprep dedup`` at another threshold, given the build's directory: it reuses the
    build's signatures and writes its table and report to ``dedup-<threshold>/``; the build's
    own files (its manifest names them) stay byte for byte, and the build still verifies."""
    import shutil

    from pileprep.checks.verify import verify

    out = tmp_path / "out"
    shutil.copytree(dedup_build, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    cfg = make_config([clean_corpus], out, tokenizer_spec, partition_bytes=300_000, name="")
    summary = dedup_only(with_settings(cfg, {"dedup.threshold": 0.9, "quiet": False}))
    assert "minhash: reusing" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert verify(out).problems == []
    table = pq.read_table(out / "dedup-0.9" / "duplicates.parquet")
    assert table.num_rows == summary["removed"]
    assert json.loads((out / "dedup-0.9" / "dedup.json").read_text())["threshold"] == 0.9


def test_dedup_build_accounts_for_every_line_of_every_shard(dedup_build):
    """Per shard too: kept + duplicates + rejected = read, its duplicates being the rows of
    ``duplicates.parquet`` from that shard."""
    from collections import Counter

    report = json.loads((dedup_build / "report.json").read_text())
    removed = Counter(pq.read_table(dedup_build / "duplicates.parquet").column("source").to_pylist())
    assert sum(removed.values()) == report["duplicates"] > 0
    for shard in report["shards"]:
        assert shard["duplicates"] == removed.get(shard["source"], 0)
        assert shard["kept"] + shard["duplicates"] + sum(shard["rejected"].values()) \
            == shard["lines_read"]
    assert sum(s["kept"] for s in report["shards"]) == report["kept"]


def test_dedup_build_drops_exactly_the_removed_documents(clean_corpus, clean_build, dedup_build):
    report = json.loads((dedup_build / "report.json").read_text())
    assert report["lines_read"] == report["kept"] + report["duplicates"] + report["rejected_total"]
    removed = _removed(dedup_build)
    assert report["duplicates"] == len(removed) > 0
    truth = json.loads((clean_corpus / "truth.json").read_text())
    assert {(a, b) for a, b, _, _ in truth["exact"]} <= set(removed)
    # The deduplicated dataset is the plain one without the removed documents, token for token.
    plain = pq.read_table(clean_build / "provenance.parquet").to_pylist()
    deduped = pq.read_table(dedup_build / "provenance.parquet").to_pylist()
    plain_docs = read_documents(clean_build / "pile_text_document")
    dedup_docs = read_documents(dedup_build / "pile_0.87_deduped_text_document")
    expected = [(p["source"], p["line"], d) for p, d in zip(plain, plain_docs)
                if (p["source"], p["line"]) not in removed]
    assert [(p["source"], p["line"]) for p in deduped] == [e[:2] for e in expected]
    assert all(np.array_equal(d, e[2]) for d, e in zip(dedup_docs, expected))
    # Removed tokens per subset add up to the difference between the builds.
    plain_rep = json.loads((clean_build / "report.json").read_text())
    removed_tokens = sum(v["tokens"] for v in report["dedup"]["by_subset"].values())
    assert plain_rep["tokens"] - report["tokens"] == removed_tokens
    for name, v in report["dedup"]["by_subset"].items():
        assert v["documents"] == sum(r["pile_set_name"] == name for r in removed.values())
    assert (dedup_build / "dedup_report.md").read_text().startswith("# Near-duplicate removal")


@pytest.mark.slow
@pytest.mark.parametrize("local_bytes", [0, 1 << 40])  # kept tokens written by the workers / the driver
def test_dedup_build_same_bytes_with_two_workers(clean_corpus, dedup_build, tokenizer_spec, tmp_path,
                                                 monkeypatch, local_bytes):
    from pileprep.stages import dedup as dedup_stage

    monkeypatch.setattr(dedup_stage, "LOCAL_BYTES", local_bytes)
    cfg = make_config([clean_corpus], tmp_path, tokenizer_spec, partition_bytes=90_000,
                      workers=2, scheduler=None, name="")
    cfg = with_settings(cfg, {"dedup.enabled": True})
    build(cfg)
    for name in ("pile_0.87_deduped_text_document.bin", "pile_0.87_deduped_text_document.idx",
                 "provenance.parquet", "duplicates.parquet", "manifest.json"):
        assert (tmp_path / name).read_bytes() == (dedup_build / name).read_bytes(), name


@pytest.mark.parametrize("kw,message", [
    ({"threshold": 0.0}, "dedup.threshold"), ({"threshold": 1.2}, "dedup.threshold"),
    ({"bands": 20, "rows": 10}, "dedup.bands"), ({"bands": 4}, "both"), ({"num_perm": 1}, "dedup.num_perm")])
def test_bad_dedup_settings(kw, message):
    with pytest.raises(ConfigError, match=message):
        DedupConfig(**kw).validate()



def test_ascii_upper_case_is_lowered_like_str_lower():
    # ASCII documents skip str.lower (the compiled pass lowers A-Z): every letter, mixed with
    # non-ASCII documents in one batch, must sign as its lower-cased text does.
    upper = "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG " * 3 + "AbCdEfGhIjKlMnOpQrStUvWxYz @[`{"
    texts = [upper, "Ünïcödé ÄND ASCII WORDS MIXED HERE TOO", upper.upper()]
    sig, has = minhash.signatures(texts)
    low, low_has = minhash.signatures([t.lower() for t in texts])
    assert np.array_equal(sig, low) and np.array_equal(has, low_has)
    assert np.array_equal(sig[0], _datasketch_signature(upper, 128, 1))


def test_banding_and_permutations_come_from_the_cache_without_datasketch(tmp_path, monkeypatch):
    # The driver and every worker read them from the derived-table cache: importing datasketch
    # costs ~0.7 s. The values are datasketch's, and a fresh cache is made from it.
    monkeypatch.setenv("PILEPREP_CACHE_DIR", str(tmp_path))
    minhash.permutations.cache_clear()
    first = minhash.lsh_params(0.87, 128, True), minhash.permutations(64, 7)
    assert len(list(tmp_path.glob("*.npy"))) == 2
    ds = MinHash(num_perm=64, seed=7, scheme="affine32").permutations
    assert np.array_equal(first[1][0], ds[0]) and np.array_equal(first[1][1], ds[1])
    minhash.permutations.cache_clear()
    monkeypatch.setitem(__import__("sys").modules, "datasketch", None)  # import now fails
    again = minhash.lsh_params(0.87, 128, True), minhash.permutations(64, 7)
    assert again[0] == first[0] == (11, 11)
    assert all(np.array_equal(x, y) for x, y in zip(again[1], first[1]))
    with pytest.raises(ImportError):  # not cached: it would need datasketch
        minhash.lsh_params(0.5, 128, True)
    minhash.permutations.cache_clear()
