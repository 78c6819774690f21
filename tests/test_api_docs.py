"""Run every ```python example of docs/api.md, in order, against a real build."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def test_api_examples_run(scheduled_build, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 7  # the page's examples were found
    namespace = {"OUT": str(scheduled_build)}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name} example {i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "pileprep.Build(" in out and "TrainingOrder(seq_length=128, batch_size=8" in out
