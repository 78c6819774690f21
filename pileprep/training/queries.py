"""The queries of term counts: text or token ids, as a user gives them, made token sequences.

A text query is tokenized as it stands inside a document: with a leading space, because the
GPT-NeoX tokenizer (BPE over bytes, like GPT-2's) makes `` the`` and ``the`` two different
tokens and a word inside running text follows a space. ``leading_space=False`` tokenizes it as
at the start of a document or after a newline. No EOD is added. A query file holds one query a
line: ``ids:1,2,3`` for token ids, anything else for text; empty lines are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from pileprep.core.errors import ConfigError

IDS_PREFIX = "ids:"


@dataclass(frozen=True)
class Query:
    label: str  # the text, or the ids joined by commas
    ids: tuple[int, ...]


def read_query_file(path: str | Path) -> list[tuple[str, str, str]]:
    """``(kind, value, where)`` of each line of a query file: kind ``text`` or ``ids``, where
    ``FILE:LINE`` (1-based)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: a query file must be UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the query file ({exc.strerror})") from None
    return [("ids", ln[len(IDS_PREFIX):], f"{path}:{i}") if ln.startswith(IDS_PREFIX)
            else ("text", ln, f"{path}:{i}") for i, ln in enumerate(lines, 1) if ln]


def parse_ids(text: str, where: str = "token ids") -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{where}: token ids are whole numbers separated by commas, "
                          f"not {text!r}") from None


def make_queries(given: Sequence[tuple[str, str, str]], tokenizer: Callable[[], object],
                 leading_space: bool = True) -> list[Query]:
    """Every ``(kind, value, where)`` as a query, in order (``where`` names it in errors: a
    flag, or ``FILE:LINE``). ``tokenizer()`` is called (once) only when a text query needs it;
    a query without tokens is refused."""
    if not given:
        raise ConfigError("give a query: text, token ids or a query file")
    tok = tokenizer() if any(kind == "text" for kind, _, _ in given) else None
    out = []
    for kind, value, where in given:
        if kind == "ids":
            ids = parse_ids(value, where)
            label = ",".join(map(str, ids))
        else:
            if not value.strip():
                raise ConfigError(f"{where}: the text is empty")
            ids = tuple(tok.encode(" " + value if leading_space else value).ids)
            label = value
        if not ids:
            raise ConfigError(f"{where}: query {value!r} has no tokens")
        out.append(Query(label, ids))
    return out
