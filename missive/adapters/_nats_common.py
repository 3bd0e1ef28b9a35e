"""What both NATS transports share: the client on a LoopThread, the inbox queue, faults.

nats-py is asyncio-only. Each transport owns a :class:`~missive._aio.LoopThread`
running its connection; the delivery loop's thread calls the transport's methods
synchronously, which bridge to the event loop with ``LoopThread.run``. Messages go
the other way through a thread-safe queue that a subscription callback fills on the
event loop and :meth:`NATSTransportBase.take` empties on the loop's thread, so a
receive waits on that queue, and ``wake()`` (any thread, a signal handler) only
puts a marker into it. Private: only imported once ``missive.adapters.nats`` found
nats-py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from queue import Empty, SimpleQueue
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from missive._aio import LoopThread
from missive.runtime.transport import Batch, Fault, Transport

__all__ = ["DEFAULT_URL", "WAKE", "NATSTransportBase", "default_name", "redact", "round_trip"]

logger = logging.getLogger("missive.adapters.nats")

T = TypeVar("T")

#: The server used when neither ``url`` nor the ``NATS_URL`` environment variable is set.
DEFAULT_URL = "nats://127.0.0.1:4222"
#: Put by ``wake()``: ends a waiting receive, then skipped.
WAKE = object()

# Errors a new connection may cure: the server went away, restarted, or stopped answering.
_RECONNECT = (
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.TimeoutError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,  # JetStream not (yet) answering: a restart, a leader move
    nats.js.errors.ServiceUnavailableError,
    ConnectionError,
    OSError,
    EOFError,
)
# Errors no new connection cures: the configuration must change.
_FATAL = (
    nats.errors.AuthorizationError,
    nats.errors.SecureConnRequiredError,
    nats.errors.SecureConnWantedError,
    nats.errors.InvalidUserCredentialsError,
    nats.js.errors.NotFoundError,
    nats.js.errors.BadRequestError,
)


class ConnectionLostError(nats.errors.ConnectionClosedError):
    """The server closed the connection (or it died) while we consumed: reconnect."""

    def __str__(self) -> str:
        return "the connection to NATS was closed"


async def round_trip(nc: Client) -> None:
    """Return once the server has processed every command sent so far.

    nats-py's ``flush()`` (2.16) writes its PING straight to the socket, ahead of the
    commands still in its send buffer (a SUB just made, say), so the PONG can come
    back before the server saw them. The first flush gives the buffer's writer its
    turn; the second PING then goes out behind those commands.
    """
    await nc.flush()
    await nc.flush()


def redact(url: str) -> str:
    """``url`` without its password or token, for logs."""
    parts = []
    for one in url.split(","):
        split = urlsplit(one.strip())
        if split.username or split.password:
            netloc = f"***@{split.hostname}" + (f":{split.port}" if split.port else "")
            split = split._replace(netloc=netloc)
        parts.append(urlunsplit(split))
    return ",".join(parts)


def default_name() -> str:
    """The connection's default name, as ``nats server report connections`` shows it."""
    return f"missive {socket.gethostname()} pid {os.getpid()}"


class NATSTransportBase(Transport):
    """A nats-py client on an event loop of its own, and a queue of what it received."""

    system: ClassVar[str] = "nats"
    broker_name: ClassVar[str] = "NATS"
    first_reconnect_delay: ClassVar[float] = 0.1

    def __init__(self, url: str, name: str, connect_timeout: float = 5.0) -> None:
        self._url = url
        self._name = name
        self._connect_timeout = connect_timeout
        self._batch = Batch()
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._thread: LoopThread | None = None
        self._nc: Client | None = None
        self._closing = False  # close() runs: the closed callback is expected

    # -- the bridge -------------------------------------------------------------------

    def _run(self, coroutine: Awaitable[T]) -> T:
        """Run ``coroutine`` on the transport's event loop and return its result."""
        assert self._thread is not None, "the transport is not connected"
        return self._thread.run(coroutine)

    def _open(self) -> Client:
        """Start the event loop and connect; nats-py's own reconnection is off: the
        delivery loop reconnects (with backoff, events and logs)."""
        self._queue = SimpleQueue()
        self._closing = False
        self._thread = LoopThread("missive-nats")
        self._nc = self._run(self._connect())
        return self._nc

    async def _connect(self) -> Client:
        queue = self._queue
        refused: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            # nats-py reports asynchronous errors here (a slow consumer, a permission
            # violation); their text names subjects, never payloads. A lost or refused
            # connection is the delivery loop's to report, once.
            if isinstance(exc, _RECONNECT):
                refused.append(exc)
                logger.debug("%s: NATS reported %s", self.where(), self.describe(exc))
            else:
                logger.warning("%s: NATS reported %s", self.where(), self.describe(exc))

        async def on_closed() -> None:
            if not self._closing:
                queue.put(ConnectionLostError())

        try:
            return await nats.connect(
                self._url,
                name=self._name,
                # nats-py's own reconnection is off (the delivery loop reconnects);
                # without these it would still retry a refused server 60 times, 2 s apart.
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                connect_timeout=max(1, round(self._connect_timeout)),
                ping_interval=10,
                max_outstanding_pings=2,
                error_cb=on_error,
                closed_cb=on_closed,
            )
        except nats.errors.NoServersError as exc:
            if refused:  # the cause says more than "no servers available"
                raise refused[-1] from exc
            raise

    def take(
        self, max_messages: int, timeout: float, add: Callable[[Any], bool]
    ) -> int:
        """Pass up to ``max_messages`` queued items to ``add``, waiting up to ``timeout``
        for the first; return how many rows ``add`` made (it says per item). A queued
        exception is raised, after the rows before it are returned."""
        queue = self._queue
        try:
            item = queue.get(timeout=timeout) if timeout > 0 else queue.get_nowait()
        except Empty:
            return 0
        rows = 0
        while True:
            if isinstance(item, BaseException):
                if rows:
                    queue.put(item)  # raised by the next receive, after these rows
                    return rows
                raise item
            if item is not WAKE and add(item):
                rows += 1
                if rows >= max_messages:
                    return rows
            try:
                item = queue.get_nowait()
            except Empty:
                return rows

    # -- the Transport methods both share --------------------------------------------

    def wake(self, from_signal: bool) -> None:
        """End a waiting receive: SimpleQueue.put is reentrant, so safe in a signal handler."""
        self._queue.put(WAKE)

    def close(self) -> None:
        """Close the connection and stop its event loop. Idempotent; never raises."""
        thread, nc = self._thread, self._nc
        self._closing = True
        if thread is None:
            return
        try:
            if nc is not None and not nc.is_closed:
                with contextlib.suppress(Exception):
                    thread.run(self._before_close(nc))
                with contextlib.suppress(Exception):
                    thread.run(nc.close())
        finally:
            self._thread = self._nc = None
            thread.close()

    async def _before_close(self, nc: Client) -> None:
        """What to send before the connection closes (owed acks); nothing by default."""

    def fault(self, exc: BaseException) -> Fault:
        if isinstance(exc, _FATAL):
            return Fault.FATAL
        if isinstance(exc, _RECONNECT):
            return Fault.RECONNECT
        return Fault.FATAL

    def describe(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        return f"{type(exc).__name__}: {text}"

    def where(self) -> str:
        return redact(self._url)
