"""A nats-server of the test's own, with JetStream, on a free loopback port and its own store.

The shared NATS on 4222 serves every other test run, so the server-restart scenario
never restarts it: it runs ``nats-server -js -sd <directory>/store -p <free port>
-a 127.0.0.1`` instead, the only one it restarts. :meth:`NATSServer.restart` stops
it with SIGTERM (as an init system does: it shuts JetStream down cleanly) and starts
it again on the same port with the same store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.private_server import PrivateServer

__all__ = ["NATSServer", "require_nats_server"]

#: How long a start may take before the server is given up on, in seconds.
START_TIMEOUT = 30.0


def require_nats_server() -> None:
    """Skip (locally) or fail (CI=true) the calling test unless ``nats-server`` is on PATH."""
    if shutil.which("nats-server") is not None:
        return
    problem = "nats-server is not on PATH: apt-get install nats-server"
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


class NATSServer(PrivateServer):
    """One ``nats-server -js`` process, its store and log in ``directory``.

    Use it as a context manager, or call :meth:`start` and, in a ``finally`` block,
    :meth:`close`.
    """

    program = "nats-server"
    exits_cleanly = False  # nats-server exits with 1 on SIGTERM

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, "nats-server.log")
        self.store = directory / "store"
        #: Where clients connect.
        self.url = f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until JetStream answers (its store recovered)."""
        command = [
            "nats-server", "-js", "-sd", str(self.store),
            "-a", "127.0.0.1", "-p", str(self.port),
            "-l", str(self.log),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        from tests.conformance.nats_harness import Client

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                client = Client(self.url)
            except Exception:
                client = None
            if client is not None:
                try:
                    client.run(client.jsm.account_info())
                    return
                except Exception:
                    pass
                finally:
                    client.close()
            assert self._process is not None
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"nats-server on port {self.port} did not come up "
                    f"(exit status {self._process.poll()}); its log:\n{self.tail()}"
                )
            time.sleep(0.1)
