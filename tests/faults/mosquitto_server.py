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

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.private_server import PrivateServer

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


class MosquittoServer(PrivateServer):
    """One ``mosquitto`` process, its config, persistence file and log in ``directory``."""

    program = "mosquitto"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, "mosquitto.log")
        #: Where clients connect.
        self.url = f"mqtt://127.0.0.1:{self.port}"
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
                        f"(exit status {self._process.poll()}); its log:\n{self.tail()}"
                    ) from None
                time.sleep(0.05)
