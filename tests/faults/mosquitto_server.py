"""A mosquitto of the test's own, on a free loopback port, with persistence in its directory.

The MQTT scenarios never touch the shared Mosquitto on 1883: besides the restart,
its defaults (``max_queued_messages 1000`` per session) drop what a session holds
beyond 1000 messages, and a scenario queues N (up to 100,000) in two sessions before
its workers start. Each scenario runs on one of these instead:

* ``persistence true`` in ``directory`` (saved on SIGTERM), so sessions and their
  messages survive :meth:`MosquittoServer.restart`;
* ``max_queued_messages 0`` (no limit): nothing published is dropped;
* ``sys_interval 1``: ``$SYS/broker/store/messages/count`` (what the broker still
  holds) is published every second, for ``MQTTBroker.remaining``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

from tests.faults.redis_server import free_port

__all__ = ["MosquittoServer", "require_mosquitto"]

#: How long a start may take before the server is given up on, in seconds.
START_TIMEOUT = 30.0


def require_mosquitto() -> None:
    """Skip (locally) or fail (CI=true) the calling test unless ``mosquitto`` is on PATH."""
    if shutil.which("mosquitto") is not None:
        return
    problem = "mosquitto is not on PATH: apt-get install mosquitto"
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


class MosquittoServer:
    """One ``mosquitto`` process, its config, persistence file and log in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        #: Where clients connect.
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.log = directory / "mosquitto.log"
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {directory}/\n"
            "max_queued_messages 0\n"
            "sys_interval 1\n"
            f"user {getpass.getuser()}\n"  # root keeps its rights to the directory
            f"log_dest file {self.log}\n"
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it accepts connections (persistence loaded)."""
        self._process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"mosquitto on port {self.port} did not come up "
                        f"(exit status {self._process.poll()}); its log:\n{self._tail()}"
                    ) from None
                time.sleep(0.05)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the server (it saves its sessions and messages) and wait; its status."""
        process, self._process = self._process, None
        if process is None:
            return 0
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise AssertionError(
                f"mosquitto on port {self.port} ignored SIGTERM for {timeout:.0f} s; "
                f"killed. Its log:\n{self._tail()}"
            ) from None

    def restart(self, down: float = 2.0) -> float:
        """Stop the server, leave it down ``down`` seconds, start it again on the same port.

        Returns how many seconds it did not serve; it is started again whatever fails.
        """
        stopped = time.monotonic()
        try:
            status = self.stop()
            assert status == 0, f"mosquitto exited with status {status}:\n{self._tail()}"
            time.sleep(down)
        finally:
            self.start()
        return time.monotonic() - stopped

    def close(self) -> None:
        """Kill the server if it still runs (its files go with the test's directory)."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(10)

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> MosquittoServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
