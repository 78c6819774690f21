"""The package layout's import rule: imports point one way, down the data flow.

    cli -> api -> build -> outputs -> training -> dedup -> sources | tokenizer -> formats -> core

A module may import its own package and the packages below its own; ``sources`` and
``tokenizer`` sit side by side and must not import each other. Imports inside functions count
too (a lazy import is still a dependency). Read from the source with ``ast``, so nothing is
executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pileprep"
RANK = {"core": 0, "formats": 1, "sources": 2, "tokenizer": 2, "dedup": 3, "training": 4,
        "outputs": 5, "build": 6, "api": 7, "cli": 8}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "pileprep"


def _imports(path: Path) -> list[tuple[int, str, int]]:
    """``(line, imported pileprep module, relative level)`` of every import in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                out.append((node.lineno, node.module or "", node.level))
            elif node.module and node.module.split(".")[0] == "pileprep":
                names = [f"{node.module}.{a.name}" if node.module == "pileprep" else node.module
                         for a in node.names]
                out += [(node.lineno, n, 0) for n in names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, 0) for a in node.names if a.name.split(".")[0] == "pileprep"]
    return out


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        yield path, ".".join(p for p in rel.parts if p != "__init__")


def test_every_module_belongs_to_a_layer():
    unplaced = [m for _, m in _modules() if m != "pileprep" and _layer(m) not in RANK]
    assert not unplaced, f"modules outside the layers of docs/architecture.md: {unplaced}"


def test_imports_point_down_the_data_flow():
    wrong = []
    for path, module in _modules():
        here = _layer(module)
        for line, target, level in _imports(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if level:
                wrong.append(f"{where}: relative import (use absolute pileprep.* imports)")
                continue
            there = _layer(target)
            if here == "pileprep":
                continue  # the package's __init__: pileprep.open() delegates to the api
            if there == "pileprep" and target != "pileprep.core":
                wrong.append(f"{where}: imports the top-level package")
            elif there != here and (RANK[there] > RANK[here] or RANK[there] == RANK[here]):
                wrong.append(f"{where}: {here} imports {target} ({there} is not below {here})")
    assert not wrong, "imports against the layer rule:\n" + "\n".join(wrong)


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: an import of build from formats is reported."""
    fake = tmp_path / "pileprep"
    (fake / "formats").mkdir(parents=True)
    (fake / "formats" / "x.py").write_text("def f():\n    from pileprep.build import pipeline\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    try:
        test_imports_point_down_the_data_flow()
    except AssertionError as exc:
        assert "formats imports pileprep.build (build is not below formats)" in str(exc)
    else:
        raise AssertionError("an upward import went unnoticed")
