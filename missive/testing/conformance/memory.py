"""An in-memory broker, an adapter running a processor's test client on it, and its harness.

Public, for tests only: it lets the adapter suite check itself (and the test client's
semantics) without a broker, and it is the smallest complete example of a
:class:`~missive.testing.conformance.Harness` for a third-party adapter's author. The
broker is a queue with acks, nacks (redelivered at once, same id), competing consumers
and connections that can be dropped::

    @pytest.fixture
    def harness():
        h = MemoryHarness()
        yield h
        h.close()

    class TestMemory(AdapterSuite):
        pass
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
from collections.abc import Iterable
from typing import Any

import missive
from missive.adapters.base import Adapter
from missive.testing.conformance.harness import (
    CONSUMER_GROUPS,
    KILL_CONNECTION,
    PERSISTENCE,
    REDELIVERY,
)

logger = logging.getLogger(__name__)


class ConnectionLostError(Exception):
    """The broker dropped this connection (``MemoryBroker.kill_connections``)."""


class MemoryBroker:
    """One queue. Unacked messages go back to the front when nacked or their connection drops."""

    def __init__(self) -> None:
        self._ready: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._unacked: dict[bytes, tuple[bytes, int]] = {}  # id -> (body, connection)
        self._condition = threading.Condition()
        self._ids = itertools.count(1)
        self._connections = itertools.count(1)
        self._alive: set[int] = set()

    def publish(self, body: bytes) -> None:
        with self._condition:
            self._ready.append((b"mem-%d" % next(self._ids), body))
            self._condition.notify()

    def connect(self) -> int:
        with self._condition:
            connection = next(self._connections)
            self._alive.add(connection)
            return connection

    def get(self, connection: int, timeout: float) -> tuple[bytes, bytes] | None:
        with self._condition:
            self._check(connection)
            if not self._ready:
                self._condition.wait(timeout)
                self._check(connection)
                if not self._ready:
                    return None
            message_id, body = self._ready.popleft()
            self._unacked[message_id] = (body, connection)
            return message_id, body

    def settle(self, connection: int, message_id: bytes, ack: bool) -> None:
        with self._condition:
            self._check(connection)
            body, _ = self._unacked.pop(message_id)
            if not ack:
                self._ready.appendleft((message_id, body))
                self._condition.notify()

    def disconnect(self, connection: int) -> None:
        with self._condition:
            self._alive.discard(connection)
            for message_id, (body, owner) in list(self._unacked.items()):
                if owner == connection:
                    del self._unacked[message_id]
                    self._ready.appendleft((message_id, body))
            self._condition.notify_all()

    def kill_connections(self) -> None:
        with self._condition:
            for connection in list(self._alive):
                self.disconnect(connection)

    def remaining(self) -> int:
        with self._condition:
            return len(self._ready) + len(self._unacked)

    def _check(self, connection: int) -> None:
        if connection not in self._alive:
            raise ConnectionLostError(f"connection {connection} was dropped")


class MemoryAdapter(Adapter[Any]):
    """Consumes a :class:`MemoryBroker` through the processor's :class:`missive.TestClient`."""

    def __init__(
        self,
        message_cls: type[missive.Message],
        processor: missive.Processor[Any],
        broker: MemoryBroker,
    ) -> None:
        super().__init__(message_cls, processor)
        self.broker = broker

    def run(self) -> None:
        with self.stop_on_signals(), self.processor.test_client() as client:
            while not self.stop_requested:
                connection = self.broker.connect()
                self._set_ready()
                try:
                    self._consume(client, connection)
                except ConnectionLostError:
                    logger.warning("connection lost; reconnecting")
                finally:
                    self.broker.disconnect(connection)

    def _consume(self, client: missive.TestClient[Any], connection: int) -> None:
        while not self.stop_requested:
            delivery = self.broker.get(connection, 0.05)
            if delivery is None:
                continue
            message_id, body = delivery
            message = self.message_cls(body, message_id, {"queue": "memory"})
            try:
                outcome = client.send(message)
            except (missive.HandlingError, missive.DLQWriteError):
                logger.exception("message %r not handled; redelivering it", message_id)
                outcome = missive.Outcome.NACKED
            self.broker.settle(connection, message_id, outcome is not missive.Outcome.NACKED)


class MemoryHarness:
    """The conformance ``Harness`` for :class:`MemoryAdapter`: a fresh broker per test."""

    name = "memory"
    capabilities = frozenset({REDELIVERY, PERSISTENCE, CONSUMER_GROUPS, KILL_CONNECTION})

    def __init__(self) -> None:
        self.broker = MemoryBroker()

    def adapter(
        self, message_cls: type[missive.Message], processor: missive.Processor[Any], **options: Any
    ) -> MemoryAdapter:
        return MemoryAdapter(message_cls, processor, self.broker, **options)

    def publish(self, bodies: Iterable[bytes]) -> None:
        for body in bodies:
            self.broker.publish(body)

    def publish_external(self, body: bytes) -> None:
        raise NotImplementedError("the in-memory broker has no non-Python publisher")

    def remaining(self) -> int:
        return self.broker.remaining()

    def kill_connections(self) -> None:
        self.broker.kill_connections()

    def close(self) -> None:
        """Nothing to delete: the broker lives in memory."""
