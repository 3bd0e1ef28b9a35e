"""A nats-server of the test's own, with JetStream, on a free loopback port and its own store.

The shared NATS on 4222 serves every other test run, so the server-restart scenario
never restarts it: it runs ``nats-server -js -sd <directory>/store -p <free port>
-a 127.0.0.1`` instead, the only one it restarts. :meth:`NATSServer.restart` stops
it with SIGTERM (as an init system does: it shuts JetStream down cleanly) and starts
it again on the same port with the same store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

from tests.faults.redis_server import free_port

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


class NATSServer:
    """One ``nats-server -js`` process, its store and log in ``directory``.

    Use it as a context manager, or call :meth:`start` and, in a ``finally`` block,
    :meth:`close`.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.store = directory / "store"
        self.port = free_port()
        #: Where clients connect.
        self.url = f"nats://127.0.0.1:{self.port}"
        self.log = directory / "nats-server.log"
        self._process: subprocess.Popen[bytes] | None = None

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
                    f"(exit status {self._process.poll()}); its log:\n{self._tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the server and wait for it to exit; its exit status."""
        process, self._process = self._process, None
        if process is None:
            return 0
        process.terminate()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise AssertionError(
                f"nats-server on port {self.port} ignored SIGTERM for {timeout:.0f} s; "
                f"killed. Its log:\n{self._tail()}"
            ) from None

    def restart(self, down: float = 2.0) -> float:
        """Stop the server, leave it down ``down`` seconds, start it again on the same port
        and store. Returns how many seconds it did not serve; it is started again
        whatever fails on the way down."""
        stopped = time.monotonic()
        try:
            self.stop()  # nats-server exits with 1 on SIGTERM: its status is not checked
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

    def __enter__(self) -> NATSServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
