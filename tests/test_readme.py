"""README.md: its "In a minute" example runs as printed, with Python and with `missive run`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
LINES = b'{"label": "sign-in", "user": "ada"}\n{"label": "other"}\n'


def in_a_minute() -> str:
    section = README.read_text().split("## In a minute", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's In a minute section has no python block"
    return match.group(1)


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "app.py"], [sys.executable, "-m", "missive", "run", "app:adapter"]],
    ids=["python", "missive-run"],
)
def test_the_in_a_minute_example_handles_a_sign_in_and_dead_letters_the_rest(
    tmp_path: Path, command: list[str]
) -> None:
    # Given the example saved as app.py, as the README says
    (tmp_path / "app.py").write_text(in_a_minute())
    # When two lines are piped into it
    done = subprocess.run(
        command, input=LINES, cwd=tmp_path, capture_output=True, timeout=60, check=False
    )
    # Then the sign-in is handled and the other line is in the DLQ, with its reason
    assert done.returncode == 0, done.stderr.decode()
    assert b"signed in: ada" in done.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "missive", "dlq", "ls", "--dlq", "dlq.db"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=True,
    )
    rows = [line for line in listed.stdout.decode().splitlines() if "no handler" in line]
    assert len(rows) == 1, listed.stdout.decode()
