"""A deduplicated build's .bin written by parallel range writes: the same bytes as appending
each part's kept documents one after the other, whatever order the ranges are written in."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pileprep.core.errors import IntegrityError, PilePrepError
from pileprep.dedup import apply
from pileprep.formats import provenance
from pileprep.formats.parts import TokenPart
from pileprep.stages.pack import Appender


def _parts(tmp_path, rng: np.random.Generator, n: int) -> tuple[list[TokenPart], list[list[np.ndarray]]]:
    """``n`` token parts of random documents (some empty parts, some one-document ones)."""
    parts, docs_of = [], []
    for k in range(n):
        count = int(rng.choice([0, 1, 2, 7, 40]))
        docs = [rng.integers(0, 50_000, int(rng.integers(1, 300)), dtype=np.uint16)
                for _ in range(count)]
        stem = f"00.jsonl.zst.{k:05d}"
        bin_path, prov_path = tmp_path / f"{stem}.bin", tmp_path / f"{stem}.prov.parquet"
        (np.concatenate(docs) if docs else np.zeros(0, np.uint16)).tofile(bin_path)
        sizes = [len(d) for d in docs]
        table = provenance.part_table("00.jsonl.zst", np.arange(count, dtype=np.int64),
                                      [str(rng.choice(["A", "B"])) for _ in docs],
                                      np.asarray(sizes, np.int32), 4 * np.asarray(sizes, np.int64))
        pq.write_table(table, prov_path)
        parts.append(TokenPart(str(bin_path), str(prov_path), count, sum(sizes), 4 * sum(sizes)))
        docs_of.append(docs)
    return parts, docs_of


def _drops(rng, docs) -> np.ndarray:
    """Removed rows: none, all, the first, the last or a random third."""
    n = len(docs)
    kind = rng.integers(0, 5)
    rows = {0: [], 1: list(range(n)), 2: [0][:n], 3: [n - 1][:n]}.get(
        int(kind), sorted(rng.choice(n, n // 3, replace=False).tolist()) if n else [])
    return np.asarray(rows, np.int64)


@pytest.mark.parametrize("seed", range(6))
def test_range_writes_equal_the_serial_append(tmp_path, seed):
    rng = np.random.default_rng(seed)
    parts, docs_of = _parts(tmp_path, rng, 12)
    drops = [_drops(rng, docs) for docs in docs_of]
    # what appending each part's kept documents in order gives: written here, independently
    expected = b"".join(d.tobytes() for docs, drop in zip(docs_of, drops)
                        for j, d in enumerate(docs) if j not in set(drop.tolist()))

    out = tmp_path / "kept"
    out.mkdir()
    dropped = [apply.drop_task(p, d.tolist(), str(out), "uint16") for p, d in zip(parts, drops)]
    for p, d, drop in zip(parts, dropped, drops):
        assert d.packed.docs == p.docs - len(drop)
        assert d.nbytes == 2 * d.packed.tokens
        assert provenance.part_sizes(d.packed.prov).sum() == d.packed.tokens
    offsets = np.concatenate([[0], np.cumsum([d.nbytes for d in dropped])]).tolist()
    appender = Appender(tmp_path / "work", ["test"], keep_work=True)
    appender.preallocate(offsets[-1])
    order = list(range(len(parts)))
    random.Random(seed).shuffle(order)  # workers finish in any order
    for i in order:
        if dropped[i].nbytes:
            apply.write_kept_task(parts[i].bin, parts[i].prov, drops[i].tolist(), "uint16",
                                  str(appender.path), offsets[i], dropped[i].nbytes)
    appender.take_written([((0, i), parts[i], dropped[i].packed, dropped[i].nbytes)
                           for i in range(len(parts))])
    assert appender.path.read_bytes() == expected
    assert appender.nbytes == len(expected)
    assert appender.sha.hexdigest() == hashlib.sha256(expected).hexdigest()
    appender.shard_done(0, len(parts))
    assert [p.prov for p in appender.parts(1)] == [d.packed.prov for d in dropped]


@pytest.mark.parametrize("seed", range(4))
def test_driver_drop_and_append_equals_the_serial_append_and_records_every_part(
        tmp_path, monkeypatch, seed):
    """A small corpus's parts dropped and appended by the driver in one pass, recorded after
    every part: the expected bytes, every part's .bin deleted once recorded, and the record
    naming the last part even when the last parts kept nothing (a rerun must not take those for
    parts never appended, and read their shards again)."""
    from pileprep.core.config import ClusterConfig
    from pileprep.runner.dask_runner import Runner
    from pileprep.stages import dedup as dedup_stage

    rng = np.random.default_rng(100 + seed)
    parts, docs_of = _parts(tmp_path, rng, 10)
    drops = [_drops(rng, docs) for docs in docs_of[:-2]]
    drops += [np.arange(len(docs), dtype=np.int64) for docs in docs_of[-2:]]  # nothing kept
    expected = b"".join(d.tobytes() for docs, drop in zip(docs_of, drops)
                        for j, d in enumerate(docs) if j not in set(drop.tolist()))
    monkeypatch.setattr(dedup_stage, "APPEND_SYNC_BYTES", 1)
    positions = [(0, i) for i in range(len(parts))]
    work = tmp_path / "work"
    with Runner(ClusterConfig(scheduler="synchronous"), quiet=True) as runner:
        appender = Appender(work, ["test"], keep_work=False)
        dropped = dedup_stage._append_kept(runner, appender, positions, parts,
                                           [d.tolist() for d in drops], {0: len(parts)}, "uint16")
    assert appender.path.read_bytes() == expected
    assert appender.sha.hexdigest() == hashlib.sha256(expected).hexdigest()
    assert [d.packed.docs for d in dropped] == [p.docs - len(d) for p, d in zip(parts, drops)]
    assert not [p.bin for p in parts if Path(p.bin).exists()]
    again = Appender(work, ["test"], keep_work=False)  # as a rerun finds it
    assert again.nbytes == len(expected) and all(again.claims(pos) for pos in positions)


def test_kept_runs_merge_consecutive_kept_documents():
    starts, lengths = apply.kept_runs(np.array([3, 1, 4, 1, 5]), np.array([1, 4]), 2)
    # documents 0 | 2 3 kept: bytes [0, 6) and [8, 18)
    assert starts.tolist() == [0, 8] and lengths.tolist() == [6, 10]
    assert [x.tolist() for x in apply.kept_runs(np.array([2, 2]), np.array([0, 1]), 2)] == [[], []]
    assert [x.tolist() for x in apply.kept_runs(np.array([2, 2]), np.array([], np.int64), 4)] == [[0], [16]]


def test_a_short_part_or_a_wrong_range_is_an_error(tmp_path):
    parts, _ = _parts(tmp_path, np.random.default_rng(1), 6)
    part = next(p for p in parts if p.docs >= 2)
    target = tmp_path / "target.bin"
    target.write_bytes(bytes(2 * part.tokens))
    with pytest.raises(PilePrepError, match="a range of"):  # the driver's range is not the part's
        apply.write_kept_task(part.bin, part.prov, [], "uint16", str(target), 0, 2 * part.tokens - 2)
    with open(part.bin, "r+b") as f:
        f.truncate(2 * part.tokens - 2)
    with pytest.raises(IntegrityError, match="shorter than its provenance"):
        apply.write_kept_task(part.bin, part.prov, [], "uint16", str(target), 0, 2 * part.tokens)


@pytest.mark.parametrize("row_group,removed_count", [(1000, 2500), (1000, 1000), (1 << 20, 700)])
def test_duplicates_table_same_bytes_as_one_write_of_python_strings(tmp_path, monkeypatch,
                                                                    row_group, removed_count):
    """The table is written a row group at a time from numbers; it must be the bytes of the
    whole table written at once from Python strings (the way it was made before)."""
    import pyarrow as pa

    from pileprep.dedup import steps
    from pileprep.formats.parts import Partition

    monkeypatch.setattr(provenance, "ROW_GROUP", row_group)
    rng = np.random.default_rng(row_group + removed_count)
    names = ["Pile-CC", "GitHub", "ArXiv", "Enron Emails"]
    parts, paths, truth = [], [], []
    start = 0
    for k in range(12):
        rows = int(rng.integers(1, 900))
        lines = np.sort(rng.choice(10 * rows, rows, replace=False)).astype(np.int64)
        subsets = [names[j] for j in rng.integers(0, len(names), rows)]
        path = tmp_path / f"sig-{k}.parquet"
        pq.write_table(pa.table({"line": lines, "pile_set_name": subsets}), path)
        source = f"{k // 4:02d}.jsonl.zst"
        parts.append(Partition(str(path), source, k // 4, k % 4, 0, rows, 0))
        paths.append(path)
        truth += [(source, int(line), s) for line, s in zip(lines, subsets)]
        start += rows
    offsets = np.cumsum([0] + [p.rows for p in parts[:-1]]).astype(np.int64)
    gids = np.sort(rng.choice(np.arange(1, start), removed_count, replace=False))
    removed = np.zeros(len(gids), steps.REMOVED_ROW)
    removed["gid"], removed["kept"] = gids, rng.integers(0, gids)
    removed["sim"], removed["direct"] = rng.random(len(gids)).astype(np.float32), rng.random(len(gids)) < 0.5
    apply.write_table(removed, offsets, parts, paths, tmp_path / "new.parquet")

    g, k = removed["gid"].tolist(), removed["kept"].tolist()
    reference = pa.table([[truth[i][0] for i in g], [truth[i][1] for i in g], [truth[i][2] for i in g],
                          [truth[i][0] for i in k], [truth[i][1] for i in k],
                          removed["sim"], removed["direct"]], schema=apply.TABLE_SCHEMA)
    pq.write_table(reference, tmp_path / "old.parquet", compression="zstd", row_group_size=row_group)
    assert (tmp_path / "new.parquet").read_bytes() == (tmp_path / "old.parquet").read_bytes()
    assert pq.ParquetFile(tmp_path / "new.parquet").num_row_groups == -(-removed_count // row_group)


def test_rows_by_partition_splits_sorted_gids():
    from pileprep.dedup import steps

    removed = np.zeros(6, steps.REMOVED_ROW)
    removed["gid"] = [0, 4, 5, 9, 10, 12]
    got = apply.rows_by_partition(removed, np.array([0, 5, 5, 10], np.int64))
    assert [g.tolist() for g in got] == [[0, 4], [], [0, 4], [0, 2]]
