"""Fixtures of the CLI tests: the ``missive`` command run as a user runs it, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from missive.dlq.sqlite import SQLiteDLQ

# Variables of the developer's shell that would change what the command does.
_UNSET = (
    "MISSIVE_DLQ",
    "MISSIVE_DLQ_TABLE",
    "MISSIVE_WORKER",
    "MISSIVE_SUPERVISOR_PID",
    "NO_COLOR",
    "FORCE_COLOR",
)


@dataclass(frozen=True)
class Result:
    """What a run of the command gave."""

    returncode: int
    stdout_bytes: bytes
    stderr: str

    @property
    def stdout(self) -> str:
        """stdout as text."""
        return self.stdout_bytes.decode("utf-8", "replace")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a run: this one, without Missive's variables, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key not in _UNSET}
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class CLI:
    """Runs ``python -m missive ARGS`` in a directory, as a user would in a shell."""

    cwd: Path

    def command(self, *args: str) -> list[str]:
        """The argv of a run."""
        return [sys.executable, "-m", "missive", *args]

    def __call__(
        self,
        *args: str,
        input: bytes | str = b"",
        env: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> Result:
        data = input.encode() if isinstance(input, str) else input
        done = subprocess.run(
            self.command(*args),
            cwd=self.cwd,
            env=clean_env(env),
            input=data,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr.decode("utf-8", "replace"))


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    """The command, run in this test's own directory."""
    return CLI(tmp_path)


@pytest.fixture
def dlq_path(tmp_path: Path) -> Path:
    """The path of an SQLite DLQ file that exists and is empty."""
    path = tmp_path / "dlq.db"
    SQLiteDLQ(path).close()
    return path


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """The run failed with exactly one ``missive: error:`` line naming ``fragments``."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("missive: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr
