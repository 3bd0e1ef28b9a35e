"""Health: liveness and readiness of a worker, from the delivery loop's events.

::

    from missive.health import serve

    server = serve(adapter, "127.0.0.1:8000")  # /healthz, /readyz, /metrics
    try:
        adapter.run()
    finally:
        server.close()

``missive run --http HOST:PORT`` does the same. Standard library only; ``/metrics``
needs the ``missive[prometheus]`` extra and answers 404 without it.

**Live** (``/healthz``): the loop showed progress (a receive, even an empty one,
a message, a handler starting or finishing) within ``progress_timeout`` seconds, or a
handler is running and none has run longer than ``handler_timeout``. A loop waiting
to reconnect is live for the wait it announced, plus ``progress_timeout``. A stopping
worker stays live unless a handler is wedged: its drain is bounded by the adapter's
``graceful_timeout``.

**Ready** (``/readyz``): started, connected and consuming. False until the first
connection works, while reconnecting after a lost one (until the connection is
restored or a receive succeeds), and from the moment a stop is requested (SIGTERM):
a draining worker takes no new work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from missive.events import Observer

if TYPE_CHECKING:
    from missive._ops_server import OpsServer
    from missive.adapters.base import Adapter
    from missive.context import HandlingContext, Outcome, ProcessingContext
    from missive.message import Message

__all__ = ["DEFAULT_HANDLER_TIMEOUT", "DEFAULT_PROGRESS_TIMEOUT", "Health", "serve"]

#: Seconds without progress after which a worker is not live. The loop reports an
#: empty receive every ``poll_timeout`` (0.5 s by default) and a reconnection's wait
#: is allowed for, so only a wedged loop stays silent this long; 30 s leaves room for
#: a slow broker call (a RabbitMQ declare, a Redis failover) without flapping, and
#: with a probe period of 10 s and 3 failures a wedged worker restarts in about a minute.
DEFAULT_PROGRESS_TIMEOUT = 30.0
#: Seconds one handler may run before the worker is not live (Python cannot interrupt
#: a handler: a restart is the only cure for one stuck on a socket without timeout).
DEFAULT_HANDLER_TIMEOUT = 300.0


class Health(Observer):
    """An observer that tells whether its worker is live and ready; see the module's notes.

    Register it with ``adapter.add_observer(health)`` before :meth:`Adapter.run`, or let
    :func:`serve` do it. Its methods are cheap (a clock read) and thread-safe:
    :meth:`live` and :meth:`ready` are called from the HTTP server's threads.

    :param progress_timeout: seconds without progress before :meth:`live` is false.
    :param handler_timeout: seconds one handler may run before :meth:`live` is false;
        ``None``: no limit.
    :param clock: a monotonic clock in seconds (for tests).
    :raises ValueError: for a timeout that is not above 0.
    """

    def __init__(
        self,
        *,
        progress_timeout: float = DEFAULT_PROGRESS_TIMEOUT,
        handler_timeout: float | None = DEFAULT_HANDLER_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not progress_timeout > 0:
            raise ValueError(f"progress_timeout must be above 0 s, not {progress_timeout!r}")
        if handler_timeout is not None and not handler_timeout > 0:
            raise ValueError(f"handler_timeout must be above 0 s or None, not {handler_timeout!r}")
        #: Seconds without progress before the worker is not live.
        self.progress_timeout = progress_timeout
        #: Seconds one handler may run before the worker is not live (``None``: no limit).
        self.handler_timeout = handler_timeout
        self._clock = clock
        self._adapter: Any = None
        self._last: float | None = None  # the last sign of progress
        self._allowance = 0.0  # a reconnection's announced wait, on top of the timeout
        self._reconnecting = False
        self._stopping = False
        self._running: dict[int, float] = {}  # id(hctx) -> when its handling started

    # -- what it answers ---------------------------------------------------------

    def live(self) -> tuple[bool, str]:
        """Whether the worker is live, and why, in a line without any payload."""
        last = self._last
        if last is None:
            return True, "starting"
        now = self._clock()
        running = tuple(self._running.values())
        if running:
            longest = now - min(running)
            limit = self.handler_timeout
            if limit is not None and longest > limit:
                return False, f"a handler has been running for {longest:.0f} s (limit {limit:g} s)"
            return True, f"{len(running)} handling, the longest for {longest:.1f} s"
        if self._stopping or self._stop_requested():
            return True, "stopping"
        silent = now - last
        if silent > self.progress_timeout + self._allowance:
            return False, (
                f"no progress for {silent:.0f} s (limit {self.progress_timeout:g} s): "
                "the delivery loop is stuck"
            )
        return True, f"last progress {silent:.1f} s ago"

    def ready(self) -> tuple[bool, str]:
        """Whether the worker is connected and consuming, and why, in a line."""
        adapter = self._adapter
        if adapter is None:
            return False, "not started"
        if self._stopping or self._stop_requested():
            return False, "stopping: finishing the messages in hand"
        if self._reconnecting:
            return False, "connection lost: reconnecting"
        if not adapter.wait_ready(0):
            return False, "connecting"
        return True, "consuming"

    def _stop_requested(self) -> bool:
        adapter = self._adapter
        return adapter is not None and bool(adapter.stop_requested)

    def _progress(self) -> None:
        self._last = self._clock()
        self._allowance = 0.0

    # -- the events it follows ---------------------------------------------------

    def worker_started(self, adapter: Any) -> None:
        self._adapter = adapter
        self._stopping = False
        self._reconnecting = False
        self._progress()

    def worker_stopping(self, adapter: Any) -> None:
        self._stopping = True

    def connection_lost(self, where: str, error: BaseException, retry_in: float) -> None:
        self._reconnecting = True
        self._progress()
        self._allowance = retry_in

    def connection_restored(self, where: str) -> None:
        self._reconnecting = False
        self._progress()

    def polled(self, count: int) -> None:
        self._reconnecting = False
        self._last = self._clock()
        self._allowance = 0.0

    def message_received(self, message: Message, delivery_count: int | None) -> None:
        self._last = self._clock()

    def handling_started(self, pctx: ProcessingContext[Any], hctx: HandlingContext[Any]) -> None:
        self._running[id(hctx)] = self._last = self._clock()

    def handling_finished(
        self,
        pctx: ProcessingContext[Any],
        hctx: HandlingContext[Any],
        outcome: Outcome | None,
        duration: float,
    ) -> None:
        self._running.pop(id(hctx), None)
        self._last = self._clock()


def serve(
    adapter: Adapter[Any],
    address: str,
    *,
    health: Health | None = None,
    metrics: bool = True,
) -> OpsServer:
    """Serve ``/healthz``, ``/readyz`` and ``/metrics`` for ``adapter`` on ``address``.

    Registers ``health`` (a new :class:`Health` by default) on the adapter and, with
    ``metrics`` and the ``missive[prometheus]`` extra installed, instruments the adapter
    (:func:`missive.metrics.instrument`). The server runs on daemon threads until
    :meth:`~missive._ops_server.OpsServer.close`; call this before :meth:`Adapter.run`.

    :param address: ``HOST:PORT`` (``[::1]:8000`` for IPv6; port 0 picks a free one,
        see the returned server's ``address``).
    :raises ValueError: for an address that is not ``HOST:PORT``.
    :raises OSError: if the address cannot be bound (in use, not local).
    """
    from missive._ops_server import OpsServer, metrics_exposition, parse_address

    host, port = parse_address(address)
    health = Health() if health is None else health
    server = OpsServer(host, port, health)
    if metrics:
        server.metrics = metrics_exposition(adapter)
    adapter.add_observer(health)
    server.start()
    return server
