"""An independent implementation of the MMIDIDX format and of GPT-NeoX preprocessing semantics.

Written from the format description (docs/formats.md) for the tests only; it imports nothing
from pileprep, uses the standard ``json`` module and ``struct`` instead of orjson and numpy
views, and processes documents one at a time, the way ``preprocess_data.py --append-eod`` does:
shards in the given order, empty texts dropped, ``encode(text).ids + [eod]`` per document.
"""

from __future__ import annotations

import io
import json
import struct

import zstandard

MAGIC = b"MMIDIDX\x00\x00"
CODES = {1: ("B", 1), 2: ("b", 1), 3: ("h", 2), 4: ("i", 4), 5: ("q", 8), 8: ("H", 2)}


def read_index(path):
    """Return (dtype_code, sizes, pointers, doc_idx) parsed field by field with struct."""
    data = open(path, "rb").read()
    assert data[:9] == MAGIC, "bad magic"
    (version,) = struct.unpack("<Q", data[9:17])
    assert version == 1
    code = data[17]
    count, doc_count = struct.unpack("<QQ", data[18:34])
    pos = 34
    sizes = list(struct.unpack(f"<{count}i", data[pos:pos + 4 * count]))
    pos += 4 * count
    pointers = list(struct.unpack(f"<{count}q", data[pos:pos + 8 * count]))
    pos += 8 * count
    doc_idx = list(struct.unpack(f"<{doc_count}q", data[pos:pos + 8 * doc_count]))
    pos += 8 * doc_count
    assert pos == len(data), "trailing bytes in index"
    return code, sizes, pointers, doc_idx


def read_documents(prefix):
    """All documents of ``prefix.bin/.idx`` as lists of ints."""
    code, sizes, pointers, _ = read_index(f"{prefix}.idx")
    fmt, width = CODES[code]
    blob = open(f"{prefix}.bin", "rb").read()
    return [list(struct.unpack(f"<{n}{fmt}", blob[p:p + n * width])) for n, p in zip(sizes, pointers)]


def iter_shard_texts(path):
    """Yield (line, text) for every line, parsed with the stdlib json module."""
    raw = open(path, "rb").read()
    if str(path).endswith(".zst"):
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True).read()
    for i, line in enumerate(raw.split(b"\n")):
        if not line and i == raw.count(b"\n"):
            break  # the empty string after the final newline is not a line
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            yield i, None
            continue
        yield i, obj


def reference_build(shard_paths, tokenizer, prefix, eod=0, vocab_size=50277, append_eod=True):
    """Write ``prefix.bin/.idx`` exactly as preprocess_data.py [--append-eod] would."""
    docs = []
    for path in shard_paths:
        for _, obj in iter_shard_texts(path):
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"]:
                continue
            docs.append(tokenizer.encode(obj["text"]).ids + ([eod] if append_eod else []))
    write_documents(prefix, docs, vocab_size)


def write_documents(prefix, docs, vocab_size=50277):
    """Write ``prefix.bin/.idx`` holding ``docs`` (lists of ids), one sequence per document."""
    code, width, fmt = (8, 2, "H") if vocab_size < 65500 else (4, 4, "i")
    sizes = []
    with open(f"{prefix}.bin", "wb") as out:
        for ids in docs:
            out.write(struct.pack(f"<{len(ids)}{fmt}", *ids))
            sizes.append(len(ids))
    pointers, address = [], 0
    for n in sizes:
        pointers.append(address)
        address += n * width
    with open(f"{prefix}.idx", "wb") as idx:
        idx.write(MAGIC)
        idx.write(struct.pack("<Q", 1))
        idx.write(struct.pack("<B", code))
        idx.write(struct.pack("<Q", len(sizes)))
        idx.write(struct.pack("<Q", len(sizes) + 1))
        idx.write(struct.pack(f"<{len(sizes)}i", *sizes))
        idx.write(struct.pack(f"<{len(pointers)}q", *pointers))
        idx.write(struct.pack(f"<{len(sizes) + 1}q", *range(len(sizes) + 1)))
