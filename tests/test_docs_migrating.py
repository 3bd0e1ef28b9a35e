"""The code in docs/migrating.md: every Python block runs as printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = (Path(__file__).resolve().parents[1] / "docs" / "migrating.md").read_text("utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", DOC, flags=re.DOTALL)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 6


def test_the_page_names_the_import_command() -> None:
    assert "missive dlq import-legacy --from" in DOC


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block {i}" for i in range(len(BLOCKS))])
def test_every_python_block_runs(block: str) -> None:
    namespace: dict[str, object] = {"__name__": "docs_migrating"}
    exec(compile(block, "docs/migrating.md", "exec"), namespace)  # our own docs
