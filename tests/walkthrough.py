"""Run the console examples of a Markdown page and compare (or, with --update, rewrite) their output.

A console block is a fenced ``console`` block: lines starting with ``$ `` are commands, the lines
after each are what it prints on stdout. Commands run with bash (a pipeline's status is its
last command's, so ``| head`` works), in order, in one working directory, with this Python's ``pileprep`` first on PATH.

    python tests/walkthrough.py docs/memorization.md --update   # regenerate the outputs
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BLOCK = re.compile(r"```console\n(.*?)```", re.S)


def parse(block: str) -> list[tuple[str, str]]:
    """``[(command, expected stdout)]`` of one console block."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return [(cmd, "\n".join(out).rstrip("\n")) for cmd, out in steps]


def run(command: str, cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               COLUMNS="100")
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"`{command}` exited {done.returncode}:\n{done.stderr[-2000:]}")
    return done.stdout.rstrip("\n")


def check(page: Path, cwd: Path, update: bool = False) -> list[tuple[str, str, str]]:
    """Run every command; return ``(command, documented, actual)`` for each one that differs."""
    text = page.read_text()
    diffs, blocks = [], []
    for block in BLOCK.findall(text):
        lines = []
        for cmd, expected in parse(block):
            actual = run(cmd, cwd)
            if actual != expected:
                diffs.append((cmd, expected, actual))
            lines += [f"$ {cmd}"] + ([actual] if actual else [])
        blocks.append("\n".join(lines) + "\n")
    if update:
        parts = iter(blocks)
        page.write_text(BLOCK.sub(lambda m: f"```console\n{next(parts)}```", text))
    return diffs


if __name__ == "__main__":
    page = Path(sys.argv[1]).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        found = check(page, Path(tmp), update="--update" in sys.argv)
        if "--update" in sys.argv:  # the page shows the charts it makes
            (page.parent / "img").mkdir(exist_ok=True)
            for png in Path(tmp).glob("*.png"):
                (page.parent / "img" / png.name).write_bytes(png.read_bytes())
    for cmd, want, got in found:
        print(f"$ {cmd}\n--- documented\n{want}\n--- actual\n{got}\n")
    print(f"{len(found)} command(s) differ" + (" (page updated)" if "--update" in sys.argv else ""))
