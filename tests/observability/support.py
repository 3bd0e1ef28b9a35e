"""``missive run --http`` in a subprocess, as a deployment runs it, and a look at its probes."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.cli.conftest import CLI, clean_env
from tests.faults.private_server import free_port

__all__ = ["Run", "get", "wait_for"]


def get(url: str) -> tuple[int, str]:
    """The status and body of a GET; ``(0, why)`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 30) -> None:
    """Wait until ``condition()`` holds; fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


class Run:
    """``missive run TARGET --http 127.0.0.1:PORT [ARGS...]`` in ``directory``.

    Stop it with :meth:`stop` (SIGTERM, then a kill after ``timeout``) in a ``finally``.
    """

    def __init__(
        self, directory: Path, target: str, *args: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / f"run-{self.port}.log"
        command = CLI(directory).command("run", target, "--http", f"127.0.0.1:{self.port}", *args)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=directory, env=clean_env(env),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip

    @property
    def log(self) -> str:
        """What the command wrote so far."""
        return self.log_path.read_text(errors="replace")

    def probe(self, path: str) -> tuple[int, str]:
        """``get`` of ``path`` on its server; fails the test if the command exited."""
        if self.process.poll() is not None:
            pytest.fail(f"missive run exited with {self.process.returncode}:\n{self.log}")
        return get(self.url + path)

    def wait_probe(self, path: str, status: int, timeout: float = 30) -> str:
        """Wait until ``path`` answers ``status``; returns its body."""
        answer: list[tuple[int, str]] = []

        def answered() -> bool:
            answer[:] = [self.probe(path)]
            return answer[0][0] == status

        try:
            wait_for(f"{path} to answer {status}", answered, timeout)
        except pytest.fail.Exception:
            pytest.fail(f"{path} answered {answer} instead of {status}; log:\n{self.log}")
        return answer[0][1]

    def terminate(self) -> None:
        """Send SIGTERM (a stop request: it drains)."""
        self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM it and wait; kill it after ``timeout`` s. Its exit status."""
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
