"""docs/memorization.md: every command runs, and prints exactly what the page shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from walkthrough import BLOCK, check, parse

PAGE = Path(__file__).resolve().parent.parent / "docs" / "memorization.md"


@pytest.mark.slow
def test_memorization_walkthrough_is_current(tmp_path):
    commands = [c for block in BLOCK.findall(PAGE.read_text()) for c, _ in parse(block)]
    assert len(commands) >= 12 and any(c.startswith("pileprep seen") for c in commands)
    diffs = check(PAGE, tmp_path)
    assert not diffs, "\n\n".join(f"$ {c}\n--- page\n{w}\n--- now\n{g}" for c, w, g in diffs)
    assert (tmp_path / "subset_mix.png").read_bytes()[:4] == b"\x89PNG"
