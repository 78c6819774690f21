"""Reading shards: streaming, line splitting, truncated and garbled streams, record validation."""

from __future__ import annotations


import orjson
import pytest
import zstandard

from pileprep.core.config import ReadConfig
from pileprep.stages.ingest import ingest_shard
from pileprep.core.errors import BadRecordError, InputError
from pileprep.sources import discover
from pileprep.sources.base import BadRecord, Record, ShardError
from pileprep.sources.jsonl import ShardStream, parse_line


def _zst(lines: list[bytes], trailing_newline=True) -> bytes:
    body = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    return zstandard.ZstdCompressor().compress(body)


def _doc(i: int) -> bytes:
    return orjson.dumps({"text": f"document {i} " + "x" * (i % 97), "meta": {"pile_set_name": "Pile-CC"}})


def _lines(path):
    stream = ShardStream(path)
    return [(n, raw, partial) for n, raw, partial in stream], stream


def test_lines_split_on_newline_only_and_last_line_without_newline(tmp_path):
    p = tmp_path / "a.jsonl.zst"
    p.write_bytes(_zst([b'{"text":"a\\r\\nb"}', b'{"text":"c"}\r', b'{"text":"d"}'], trailing_newline=False))
    got, stream = _lines(p)
    assert [n for n, _, _ in got] == [0, 1, 2]
    assert got[1][1] == b'{"text":"c"}\r' and not any(partial for *_, partial in got)
    assert parse_line(got[1][1]) == Record("c", "")  # \r is JSON whitespace
    assert stream.size == p.stat().st_size and len(stream.sha256) == 64


def test_multiple_frames_are_read_across(tmp_path):
    p = tmp_path / "m.jsonl.zst"
    p.write_bytes(_zst([_doc(0), _doc(1)]) + _zst([_doc(2)]))
    assert [n for n, _, _ in _lines(p)[0]] == [0, 1, 2]


def test_many_lines_stream_in_bounded_chunks(tmp_path):
    p = tmp_path / "big.jsonl.zst"
    docs = [_doc(i) for i in range(20000)]
    p.write_bytes(_zst(docs))
    got, _ = _lines(p)
    assert [raw for _, raw, _ in got] == docs


def test_truncated_stream_keeps_complete_lines_and_reports_break(tmp_path):
    docs = [_doc(i) for i in range(5000)]
    data = _zst(docs)
    p = tmp_path / "t.jsonl.zst"
    p.write_bytes(data[: len(data) // 2])
    seen = []
    with pytest.raises(ShardError) as err:
        for item in ShardStream(p):
            seen.append(item)
    assert err.value.reason == "truncated_zstd"
    complete = [raw for _, raw, partial in seen if not partial]
    assert complete == docs[: len(complete)] and len(complete) > 100
    assert seen[-1][2] is True  # the cut line comes last, flagged partial


def test_ingest_counts_truncated_shard(tmp_path):
    docs = [_doc(i) for i in range(30000)]
    data = _zst(docs)
    p = tmp_path / "t.jsonl.zst"
    p.write_bytes(data[: len(data) // 3])
    work = tmp_path / "work"
    work.mkdir()
    res = ingest_shard(discover([str(p)])[0], 0, str(work), ReadConfig(inputs=[str(p)]))
    assert res.shard_error["reason"] == "truncated_zstd"
    assert res.lines_read == res.accepted + sum(res.rejected.values())
    assert res.rejected == {"truncated_line": 1} and res.accepted > 100


def _garbled() -> bytes:
    data = bytearray(_zst([_doc(i) for i in range(20000)]))
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    return bytes(data)


@pytest.mark.parametrize("content,reasons", [
    (b"this is not zstd at all" * 10, {"not_zstd"}),
    (_garbled(), {"corrupt_zstd"}),
    (b"\x28\xb5\x2f\xfd" + b"\x00" * 40, {"corrupt_zstd", "truncated_zstd"}),
])
def test_garbled_shard(tmp_path, content, reasons):
    p = tmp_path / "g.jsonl.zst"
    p.write_bytes(content)
    with pytest.raises(ShardError) as err:
        list(ShardStream(p))
    assert err.value.reason in reasons
    assert "g.jsonl.zst" in str(err.value)


def test_empty_shard_has_no_lines(tmp_path):
    for name, data in [("e.jsonl.zst", b""), ("f.jsonl.zst", _zst([], trailing_newline=False)),
                       ("g.jsonl", b"")]:
        p = tmp_path / name
        p.write_bytes(data)
        assert _lines(p)[0] == []


def test_unreadable_shard(tmp_path):
    p = tmp_path / "dir.jsonl.zst"
    p.mkdir()
    with pytest.raises(ShardError) as err:
        list(ShardStream(p))
    assert err.value.reason == "unreadable"


@pytest.mark.parametrize("raw,expected", [
    (b'{"text": "hi", "meta": {"pile_set_name": "ArXiv"}}', Record("hi", "ArXiv")),
    (b'{"text": "hi"}', Record("hi", "")),
    (b'{"text": "hi", "meta": {}}', Record("hi", "")),
    (b'{"text": "hi", "meta": null}', Record("hi", "")),
    (b'{"text": "\\ud83d\\ude00"}', Record("\U0001F600", "")),  # a valid surrogate pair
    (b'{"text": ""}', "empty_text"),
    (b'{"text": null}', "text_not_string"),
    (b'{"text": ["a", "b"]}', "text_not_string"),
    (b'{"meta": {}}', "missing_text"),
    (b'[1, 2]', "not_an_object"),
    (b'"just a string"', "not_an_object"),
    (b'{"text": "x", "meta": [1]}', "bad_meta"),
    (b'{"text": "x", "meta": {"pile_set_name": 3}}', "bad_meta"),
    (b'{"text": "x"', "invalid_json"),
    (b'', "invalid_json"),
    (b'{"text": "\xc3\x28"}', "invalid_utf8"),
    (b'{"text": "\\udc00 alone"}', "lone_surrogate"),
])
def test_parse_line(raw, expected):
    got = parse_line(raw)
    if isinstance(expected, Record):
        assert got == expected
    else:
        assert isinstance(got, BadRecord) and got.reason == expected and got.detail


def test_strict_names_file_and_line(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(_doc(0) + b"\n" + _doc(1) + b"\n{broken\n")
    work = tmp_path / "w"
    work.mkdir()
    with pytest.raises(BadRecordError) as err:
        ingest_shard(discover([str(p)])[0], 0, str(work), ReadConfig(inputs=[str(p)], strict=True))
    assert str(err.value).startswith("s.jsonl: line 2 (0-based): invalid_json")


def test_discover_sorts_by_name_and_refuses_ambiguity(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in ["10.jsonl.zst", "02.jsonl.zst", "notes.txt"]:
        (tmp_path / "a" / name).write_bytes(b"")
    (tmp_path / "b" / "01.jsonl").write_bytes(b"")
    found = discover([str(tmp_path / "a"), str(tmp_path / "b" / "*.jsonl")])
    assert [p.name for p in found] == ["01.jsonl", "02.jsonl.zst", "10.jsonl.zst"]
    (tmp_path / "b" / "02.jsonl.zst").write_bytes(b"")
    with pytest.raises(InputError, match="share the name"):
        discover([str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(InputError, match="does not exist"):
        discover([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no shards"):
        discover([str(tmp_path / "empty")])
    with pytest.raises(InputError, match="matches no file"):
        discover([str(tmp_path / "nothing-*.jsonl.zst")])
