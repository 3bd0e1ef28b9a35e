"""The fault-injection suite's report: every scenario's counts, as a table.

At the end of the run the rows go to the terminal and to ``.faults/report.md`` (in
the repository's root), from which ``docs/reliability.md`` is regenerated.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

from tests.faults.scenario import MODES, ROWS, SIZE_VARIABLE, Counts, Mode, fault_n

_HEADER = (
    "| scenario | broker | mode | N | handled | dead-lettered | duplicates | lost | seconds "
    "| notes |",
    "|---|---|---|--:|--:|--:|--:|--:|--:|---|",
)


@pytest.fixture(params=MODES, ids=[mode.name for mode in MODES])
def mode(request: pytest.FixtureRequest) -> Mode:
    """Each scenario runs once per mode: ``[serial]``, ``[threads16]``, ``[async16]``."""
    mode: Mode = request.param
    return mode


def table(rows: list[Counts]) -> list[str]:
    """The rows as a Markdown table."""
    lines = list(_HEADER)
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.broker} | {r.mode} | {r.n:,} | {r.handled:,} "
            f"| {r.dead_lettered:,} | {r.duplicates:,} | {r.lost:,} | {r.seconds:.0f} | {r.note} |"
        )
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    command = f"{SIZE_VARIABLE}={fault_n()} pytest -m faults tests/faults"
    lines = [
        f"Fault-injection counts ({command}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs)",
        "",
        *table(ROWS),
    ]
    terminalreporter.write_sep("=", "fault-injection counts")
    for line in lines:
        terminalreporter.write_line(line)
    directory = Path(terminalreporter.config.rootpath) / ".faults"
    directory.mkdir(exist_ok=True)
    (directory / ".gitignore").write_text("*\n")
    (directory / "report.md").write_text("\n".join(lines) + "\n")
    terminalreporter.write_line(f"(written to {directory / 'report.md'})")
