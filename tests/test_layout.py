"""The package layout's rules (docs/architecture.md): imports point one way, down the data flow,

    cli -> api -> jobs -> stages -> runner -> outputs -> checks -> training -> dedup
        -> sources | tokenizer -> formats -> core

and the query layer writes no result files: ``training`` returns arrays and dataclasses, and
every file a query writes is written in ``outputs``.

A module may import its own package and the packages below its own; ``sources`` and
``tokenizer`` sit side by side and must not import each other. Imports inside functions count
too (a lazy import is still a dependency). Read from the source with ``ast``, so nothing is
executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pileprep"
RANK = {"core": 0, "formats": 1, "sources": 2, "tokenizer": 2, "dedup": 3, "training": 4,
        "checks": 5, "outputs": 6, "runner": 7, "stages": 8, "jobs": 9, "api": 10, "cli": 11}
# Writers of result files (tables, charts) that only ``outputs`` (and the build's stages and
# jobs, which write datasets) may call. ``training`` keeps its caches (stream maps, schedule
# files, sort runs) with ``atomic`` writes, but no tables or charts.
RESULT_WRITERS = ("ParquetWriter", "write_table", "to_parquet", "to_csv", "savefig",
                  "write_csv")
NO_RESULT_FILES = ("training", "checks")  # the query layers (formats define how files are written)


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


def test_queries_write_no_result_files_outside_outputs():
    wrong = []
    for path, module in _modules():
        if _layer(module) not in NO_RESULT_FILES:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = (node.attr if isinstance(node, ast.Attribute)
                    else node.id if isinstance(node, ast.Name) else None)
            if name in RESULT_WRITERS:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {name}")
    assert not wrong, "result files written outside outputs/:\n" + "\n".join(wrong)


def _violations_of(tmp_path, monkeypatch, files: dict[str, str]) -> str:
    """What the rules say of a fake package holding only ``files``."""
    fake = tmp_path / "pileprep"
    for rel, text in files.items():
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(text)
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    said = []
    for check in (test_imports_point_down_the_data_flow,
                  test_queries_write_no_result_files_outside_outputs):
        try:
            check()
        except AssertionError as exc:
            said.append(str(exc))
    return "\n".join(said)


@pytest.mark.parametrize("rel,text,said", [
    ("formats/x.py", "def f():\n    from pileprep.jobs import build\n",
     "formats imports pileprep.jobs (jobs is not below formats)"),
    ("runner/x.py", "from pileprep.stages import ingest\n",
     "runner imports pileprep.stages (stages is not below runner)"),
    ("stages/x.py", "from pileprep.jobs.build import build\n",
     "stages imports pileprep.jobs.build (jobs is not below stages)"),
    ("checks/x.py", "from pileprep.outputs import export\n",
     "checks imports pileprep.outputs (outputs is not below checks)"),
    ("training/x.py", "def f(t, w):\n    w.write_table(t)\n",
     "pileprep/training/x.py:2: write_table"),
])
def test_each_rule_catches_its_violation(tmp_path, monkeypatch, rel, text, said):
    """The checks themselves can fail: each rule reports a module that breaks it."""
    assert said in _violations_of(tmp_path, monkeypatch, {rel: text})
