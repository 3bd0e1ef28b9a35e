"""A redis-server of the test's own, on a free loopback port, that keeps its data on disk.

The shared Redis on 6379 keeps nothing on disk (``--save '' --appendonly no``), so a
restart of it loses every stream by configuration, and restarting it would disturb
every other test. The broker-restart scenario runs on one of these instead: AOF on,
fsynced at every write (``appendfsync always``), no RDB snapshots, its files in the
test's own directory. :meth:`RedisServer.restart` stops it (SIGTERM, as an init
system does) and starts it again on the same port and directory. With
``appendonly=False`` it keeps nothing, like the shared one, for the tests of what
a restart that loses everything does to the adapter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.faults.private_server import PrivateServer, free_port

__all__ = ["RedisServer", "free_port", "require_redis_server"]

#: How long a start may take before the server is given up on, in seconds.
START_TIMEOUT = 30.0


def require_redis_server() -> None:
    """Skip (locally) or fail (CI=true) the calling test unless ``redis-server`` is on PATH."""
    if shutil.which("redis-server") is not None:
        return
    problem = "redis-server is not on PATH: apt-get install redis-server"
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


class RedisServer(PrivateServer):
    """One ``redis-server`` process, with AOF (``appendfsync always``) by default, in ``directory``.

    Use it as a context manager, or call :meth:`start` and, in a ``finally`` block,
    :meth:`close`. Its log is ``directory/redis.log``.

    :param directory: where its AOF files and log go; created if missing.
    :param appendonly: ``False`` for a server that keeps nothing on disk, as the
        shared one: a restart then loses every key.
    :raises FileNotFoundError: from :meth:`start`, if ``redis-server`` is not on PATH
        (call :func:`require_redis_server` first).
    """

    program = "redis-server"

    def __init__(self, directory: Path, *, appendonly: bool = True) -> None:
        super().__init__(directory, "redis.log")
        self.appendonly = appendonly
        #: Where clients connect.
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING (its AOF loaded)."""
        command = [
            "redis-server",
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log),
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
        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            while True:
                try:
                    client.ping()  # answers LOADING (a ConnectionError) until the AOF is in
                    return
                except redis.ConnectionError:
                    assert self._process is not None
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(
                            f"redis-server on port {self.port} did not come up "
                            f"(exit status {self._process.poll()}); its log:\n{self.tail()}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()
