"""PrivateServer: a broker process of a test's own on a free loopback port, to restart.

A scenario that restarts a server never touches the shared one: it starts one of
these (redis-server, nats-server, mosquitto: the subclasses) and restarts that.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

__all__ = ["PrivateServer", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the system's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateServer:
    """One server process in ``directory``, on a free port; subclasses implement :meth:`start`.

    Use it as a context manager, or call :meth:`start` and, in a ``finally`` block,
    :meth:`close`.
    """

    #: The program's name, for error messages.
    program: ClassVar[str] = "the server"
    #: Whether a SIGTERM ends it with status 0 (nats-server exits with 1).
    exits_cleanly: ClassVar[bool] = True

    def __init__(self, directory: Path, log_name: str) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = directory / log_name
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process and return once it serves."""
        raise NotImplementedError

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the server and wait for it to exit (it saves what it keeps); its status."""
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
                f"{self.program} on port {self.port} ignored SIGTERM for {timeout:.0f} s; "
                f"killed. Its log:\n{self.tail()}"
            ) from None

    def restart(self, down: float = 2.0) -> float:
        """Stop the server, leave it down ``down`` seconds, start it again on the same port.

        Returns how many seconds it did not serve. It is started again whatever fails
        on the way down.
        """
        stopped = time.monotonic()
        try:
            status = self.stop()
            if self.exits_cleanly:
                assert status == 0, f"{self.program} exited with status {status}:\n{self.tail()}"
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

    def tail(self) -> str:
        """The end of its log, for an error message."""
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
