"""Build a high-diversity benchmark corpus from real text found on this machine.

The synthetic generator (``pileprep synth``) draws from ~20 k distinct words, which flatters the
tokenizer's word memo. Real text has millions of distinct pre-tokens: identifiers, numbers,
URLs, paths, markup. This script gathers it from what any Debian/Python machine holds: source
code of the Python standard library and installed packages, C headers, man pages, package docs
and licences (and a Rust toolchain's sources and HTML docs when one is installed).

Each file becomes a document (files over ``--doc-bytes`` are cut at line ends); identical files
are kept once. Documents are taken in a fixed pseudo-random order of their paths, so any
``--megabytes`` is a mix of every kind, and written as Pile-format zstd JSON-lines shards
(``{"text", "meta": {"pile_set_name"}}``), round robin. Same machine and settings -> same bytes.

    python benchmarks/realtext.py --out bench-out/realtext --megabytes 1024 --shards 8 [--stats]

``--stats`` also counts the distinct GPT-2 pre-tokens of the corpus with pileprep's own
pre-tokenizer (the figure the fast engine's memo depends on).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import sys
import sysconfig
from pathlib import Path

import orjson
import zstandard

# pile_set_name by file kind; anything else found under the roots is skipped.
KINDS = {
    ".py": "Code: Python", ".pyi": "Code: Python", ".c": "Code: C", ".h": "Code: C",
    ".cc": "Code: C++", ".cpp": "Code: C++", ".hpp": "Code: C++", ".rs": "Code: Rust",
    ".js": "Code: JavaScript", ".java": "Code: Java", ".pm": "Code: Perl", ".pl": "Code: Perl",
    ".sh": "Code: Shell", ".md": "Docs: Markdown", ".rst": "Docs: reStructuredText",
    ".txt": "Docs: text", ".html": "Docs: HTML", ".tex": "Docs: TeX",
}
MAN_KIND, LICENCE_KIND = "Man pages", "Licences"


def roots(small: bool = False) -> list[Path]:
    """Where real text lives on this kind of machine (missing ones are skipped); ``small``:
    a few roots that are quick to walk (for tests)."""
    home = Path.home()
    if small:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        found = [*(stdlib / name for name in ("email", "json", "asyncio", "xml", "http")),
                 Path("/usr/share/man/man1"), Path("/usr/include/linux"),
                 Path("/usr/share/common-licenses"), Path("/usr/share/doc")]
        return [p for p in found if p.is_dir()]
    found = [Path("/usr/share/man"), Path("/usr/share/doc"), Path("/usr/share/common-licenses"),
             Path("/usr/include"), Path(sysconfig.get_paths()["stdlib"]),
             Path(sysconfig.get_paths()["purelib"]), home / ".rustup" / "toolchains",
             Path("/usr/lib/python3"), Path("/usr/share/perl")]
    return [p for p in dict.fromkeys(found) if p.is_dir()]


def kind_of(path: Path) -> str | None:
    name = path.name
    if "/man/" in str(path) and name.endswith(".gz"):
        return MAN_KIND
    if "common-licenses" in str(path) or name in ("copyright", "LICENSE", "COPYING"):
        return LICENCE_KIND
    return KINDS.get(path.suffix.lower())


def candidates(root_dirs: list[Path]) -> list[tuple[str, Path, str]]:
    """(order key, path, kind) of every file of a known kind, in a fixed mixed order."""
    out = []
    for root in root_dirs:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                kind = kind_of(path)
                if kind and path.is_file() and not path.is_symlink():
                    key = hashlib.blake2b(str(path).encode(), digest_size=8).hexdigest()
                    out.append((key, path, kind))
    out.sort()
    return out


def read_text(path: Path) -> str | None:
    """The file's text, or None if it is binary, not UTF-8 or unreadable."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    if b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def documents(root_dirs: list[Path], doc_bytes: int):
    """(text, kind) of each distinct file, cut into pieces of at most ``doc_bytes``."""
    seen: set[bytes] = set()
    for _, path, kind in candidates(root_dirs):
        text = read_text(path)
        if not text or not text.strip():
            continue
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest in seen:
            continue
        seen.add(digest)
        while len(text) > doc_bytes:
            cut = text.rfind("\n", 0, doc_bytes) + 1 or doc_bytes
            yield text[:cut], kind
            text = text[cut:]
        if text.strip():
            yield text, kind


def write_corpus(out: Path, megabytes: float, shards: int, doc_bytes: int,
                 max_share: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    limit = int(megabytes * 1e6)
    cap = max_share * limit  # no kind (say templated HTML docs) may crowd out the others
    writers, files = [], []
    for i in range(shards):
        f = open(out / f"{i:02d}.jsonl.zst.tmp", "wb")
        files.append(f)
        writers.append(zstandard.ZstdCompressor(level=3).stream_writer(f))
    total = docs = 0
    kinds: dict[str, int] = {}
    for text, kind in documents(roots(), doc_bytes):
        size = len(text.encode())
        if kinds.get(kind, 0) + size > cap:
            continue
        line = orjson.dumps({"text": text, "meta": {"pile_set_name": kind}}) + b"\n"
        writers[docs % shards].write(line)
        docs += 1
        total += size
        kinds[kind] = kinds.get(kind, 0) + size
        if total >= limit:
            break
    for w, f, i in zip(writers, files, range(shards)):
        w.close()
        os.replace(f.name, out / f"{i:02d}.jsonl.zst")
    return {"documents": docs, "text_bytes": total, "bytes_by_kind": dict(sorted(kinds.items()))}


def distinct_pretokens(out: Path, limit_bytes: int = 300_000_000) -> tuple[int, int]:
    """(pre-tokens, distinct pre-tokens) over the corpus' first ``limit_bytes`` of text."""
    from pileprep.tokenizer.pretokenize import split

    words, distinct, seen = 0, set(), 0
    for shard in sorted(out.glob("*.jsonl.zst")):
        with open(shard, "rb") as f:
            reader = zstandard.ZstdDecompressor().stream_reader(f)
            for line in reader.read().splitlines():
                text = orjson.loads(line)["text"]
                pieces = split(text)
                words += len(pieces)
                distinct.update(pieces)
                seen += len(text)
                if seen >= limit_bytes:
                    return words, len(distinct)
    return words, len(distinct)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-out/realtext")
    ap.add_argument("--megabytes", type=float, default=1024)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--doc-bytes", type=int, default=200_000)
    ap.add_argument("--max-share", type=float, default=0.3,
                    help="largest fraction of the corpus one kind of file may take")
    ap.add_argument("--stats", action="store_true", help="count distinct GPT-2 pre-tokens")
    args = ap.parse_args()
    summary = write_corpus(Path(args.out), args.megabytes, args.shards, args.doc_bytes,
                           args.max_share)
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if summary["text_bytes"] < args.megabytes * 1e6:
        print(f"note: this machine holds only {summary['text_bytes'] / 1e6:.0f} MB of distinct "
              "real text under the roots", file=sys.stderr)
    if args.stats:
        words, distinct = distinct_pretokens(Path(args.out))
        print(f"pre-tokens {words:,}, distinct {distinct:,} (first 300 MB of text)")


if __name__ == "__main__":
    main()
