"""The LSH steps' pure parts against references written here from their definitions: band
keys (Python integers), candidate pairs (a dictionary of groups), unique pairs, the shuffle's
files, and the Arrow arrays the signature files are made of."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from pileprep.core.errors import IntegrityError
from pileprep.dedup import minhash, shuffle, steps
from pileprep.formats.parts import arrow_of, numpy_of

M64 = (1 << 64) - 1
BASE = 0x9E3779B97F4A7C15


def fmix64(h: int) -> int:  # MurmurHash3's 64-bit finalizer, on Python integers
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    return h ^ (h >> 33)


def band_key(values: list[int], band: int) -> int:
    h = fmix64(band + 1)
    for v in values:
        h = fmix64((h * BASE + v) & M64)
    return h


@pytest.mark.parametrize("bands,rows", [(11, 11), (16, 8), (1, 128), (3, 5)])
def test_band_keys_equal_their_definition(bands, rows):
    rng = np.random.default_rng(bands)
    sig = rng.integers(0, 2**32, (40, 128), dtype=np.uint64).astype(np.uint32)
    sig[0] = 0xFFFFFFFF
    keys = minhash.band_keys(sig, bands, rows)
    assert keys.shape == (40, bands)
    for d in range(40):
        for b in range(bands):
            assert int(keys[d, b]) == band_key(sig[d, b * rows:(b + 1) * rows].tolist(), b)


def test_candidate_pairs_are_each_groups_star_and_chain():
    rng = np.random.default_rng(3)
    rows = np.zeros(3000, steps.BAND_ROW)
    rows["key"] = rng.integers(0, 400, 3000).astype(np.uint64)  # groups of every size
    rows["gid"] = rng.permutation(3000)
    groups: dict[int, list[int]] = {}
    for key, gid in zip(rows["key"].tolist(), rows["gid"].tolist()):
        groups.setdefault(key, []).append(gid)
    expected = set()
    for members in groups.values():
        members.sort()
        for prev, gid in zip(members, members[1:]):
            expected |= {(members[0], gid), (prev, gid)}
    got = steps.candidate_pairs(rows)
    assert [(int(a), int(b)) for a, b in zip(got["a"], got["b"])] == sorted(expected)
    assert len(steps.candidate_pairs(rows[:0])) == 0


def test_unique_pairs_equal_numpys_unique():
    rng = np.random.default_rng(5)
    pairs = np.zeros(5000, steps.PAIR_ROW)
    pairs["a"], pairs["b"] = rng.integers(0, 60, 5000), rng.integers(0, 60, 5000)
    assert np.array_equal(steps.unique_pairs(pairs), np.unique(pairs))
    assert len(steps.unique_pairs(pairs[:0])) == 0


def test_shuffle_gives_each_bucket_its_rows_in_map_order(tmp_path):
    rng = np.random.default_rng(7)
    maps, prefixes = [], []
    for m in range(4):
        rows = np.zeros(int(rng.integers(0, 300)), steps.PAIR_ROW)
        rows["a"], rows["b"] = m, np.arange(len(rows))
        bucket = rng.integers(0, 6, len(rows))
        prefixes.append(tmp_path / f"map-{m}")
        assert shuffle.write(prefixes[-1], rows, bucket, 6) == len(rows)
        maps.append((rows, bucket))
    for k in range(6):
        expected = np.concatenate([rows[bucket == k] for rows, bucket in maps])
        assert np.array_equal(shuffle.read(prefixes, k, steps.PAIR_ROW), expected)
    with open(shuffle.offsets_path(prefixes[1]), "r+b") as f:
        f.truncate(16)
    with pytest.raises(IntegrityError, match="no bucket 3"):
        shuffle.read(prefixes, 3, steps.PAIR_ROW)


def test_arrow_of_and_numpy_of_wrap_numbers_and_masks():
    for n in (0, 1, 7, 8, 9, 1001):
        mask = np.random.default_rng(n).random(n) < 0.5
        assert arrow_of(mask, pa.bool_()).to_pylist() == mask.tolist()
        arr = pa.chunked_array([pa.array(mask.tolist(), pa.bool_()), pa.array([True, False])])
        assert numpy_of(arr).tolist() == mask.tolist() + [True, False]
        assert numpy_of(arr.combine_chunks().slice(n // 3)).tolist() == arr.to_pylist()[n // 3:]
    assert arrow_of(np.arange(5), pa.int64()).to_pylist() == list(range(5))


def test_signing_a_partition_does_not_import_pandas(tmp_path):
    """pyarrow's ``pa.array`` and ``to_numpy`` import pandas (0.25 s in each worker at its
    first partition): the signature files are made and read without them."""
    code = f"""
import sys
from pileprep.dedup import steps
from pileprep.formats.parts import Records
recs = Records(lines=[0, 1, 2], texts=["one two three four five six", "", "x"],
               subsets=["Pile-CC", "GitHub", "Pile-CC"])
assert steps.signature_task("unused", {str(tmp_path / 'p.parquet')!r}, 16, 1, 5, recs) == {{"rows": 3}}
sig, has = steps.load_signatures({str(tmp_path / 'p.parquet')!r})
assert sig.shape == (3, 16) and has.tolist() == [True, False, True]
print("pandas" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
