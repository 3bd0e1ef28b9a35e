"""An in-memory broker, its transport and adapter on the delivery loop, and its harness.

Public, for tests only: it lets the adapter suite check itself (and the delivery loop)
without a broker, and it is the smallest complete example of a
:class:`~missive.runtime.Transport` and a
:class:`~missive.testing.conformance.Harness` for a third-party adapter's author. The
broker is a queue with acks, nacks (redelivered at once or after a delay, same id,
counted), delayed retries kept by the broker (``retry_later``: the attempt state
written into the attributes, the delivery count going on), competing consumers and
connections that can be dropped::

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
import threading
import time
from collections.abc import Iterable
from typing import Any, ClassVar

import missive
from missive.adapters.base import Adapter
from missive.runtime import Batch, Capability, Fault, Transport
from missive.testing.conformance.harness import (
    CONSUMER_GROUPS,
    DELAYED_RETRY,
    KILL_CONNECTION,
    PERSISTENCE,
    REDELIVERY,
)


class ConnectionLostError(Exception):
    """The broker dropped this connection (``MemoryBroker.kill_connections``)."""


class MemoryBroker:
    """One queue. Unacked messages go back to the front when nacked or their connection drops."""

    def __init__(self) -> None:
        self._ready: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._unacked: dict[bytes, tuple[bytes, int]] = {}  # id -> (body, connection)
        self._deliveries: dict[bytes, int] = {}  # id -> times delivered, until acked
        self._delayed: list[tuple[float, bytes, bytes]] = []  # (when due, id, body)
        self._states: dict[bytes, dict[str, Any]] = {}  # id -> attempt state, until acked
        self._retried: set[bytes] = set()  # ids whose last delivery ended in a delayed retry
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

    def get(
        self, connection: int, timeout: float
    ) -> tuple[bytes, bytes, int, dict[str, Any], bool] | None:
        """The next message ``(id, body, times delivered, attempt state, whether it
        comes back from a delayed retry)``, or ``None`` after ``timeout``."""
        with self._condition:
            self._check(connection)
            self._release_due()
            if not self._ready and timeout > 0:
                if self._delayed:
                    timeout = min(timeout, min(self._delayed)[0] - time.monotonic())
                self._condition.wait(max(timeout, 0.0))
                self._check(connection)
                self._release_due()
            if not self._ready:
                return None
            message_id, body = self._ready.popleft()
            self._unacked[message_id] = (body, connection)
            count = self._deliveries[message_id] = self._deliveries.get(message_id, 0) + 1
            retried = message_id in self._retried
            self._retried.discard(message_id)
            return message_id, body, count, self._states.get(message_id, {}), retried

    def settle(
        self,
        connection: int,
        message_id: bytes,
        ack: bool,
        delay: float = 0.0,
        state: dict[str, Any] | None = None,
    ) -> None:
        """Ack a message, or requeue it (after ``delay`` seconds, with the attempt
        ``state`` its next deliveries carry, if given)."""
        with self._condition:
            self._check(connection)
            body, _ = self._unacked.pop(message_id)
            if state is not None:
                self._states[message_id] = dict(state)
            if ack:
                del self._deliveries[message_id]
                self._states.pop(message_id, None)
                return
            if state is not None:  # a delayed retry, as against a nack
                self._retried.add(message_id)
            if delay > 0:
                self._delayed.append((time.monotonic() + delay, message_id, body))
            else:
                self._ready.appendleft((message_id, body))
                self._condition.notify()

    def disconnect(self, connection: int) -> None:
        with self._condition:
            self._alive.discard(connection)
            # Back to the front, the last first: they keep the order they came in.
            for message_id, (body, owner) in reversed(list(self._unacked.items())):
                if owner == connection:
                    del self._unacked[message_id]
                    self._ready.appendleft((message_id, body))
            self._condition.notify_all()

    def wake(self) -> None:
        """End every wait in :meth:`get` now (they return ``None``)."""
        with self._condition:
            self._condition.notify_all()

    def kill_connections(self) -> None:
        with self._condition:
            for connection in list(self._alive):
                self.disconnect(connection)

    def remaining(self) -> int:
        with self._condition:
            return len(self._ready) + len(self._unacked) + len(self._delayed)

    def _release_due(self) -> None:
        now = time.monotonic()
        due = [entry for entry in self._delayed if entry[0] <= now]
        for entry in due:
            self._delayed.remove(entry)
            self._ready.appendleft(entry[1:])

    def _check(self, connection: int) -> None:
        if connection not in self._alive:
            raise ConnectionLostError(f"connection {connection} was dropped")


class MemoryTransport(Transport):
    """A connection to a :class:`MemoryBroker`, for the delivery loop."""

    capabilities: ClassVar[Capability] = (
        Capability.REDELIVERY
        | Capability.DELIVERY_COUNTS
        | Capability.DELAYED_REQUEUE
        | Capability.DELAYED_RETRY
        | Capability.HAND_BACK
        | Capability.PERSISTENCE
        | Capability.CONSUMER_GROUPS
    )
    broker_name: ClassVar[str] = "the memory broker"
    first_reconnect_delay: ClassVar[float] = 0.01
    ack_limit = 10

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self._connection: int | None = None
        self._batch = Batch()

    def connect(self) -> None:
        self._connection = self.broker.connect()

    def receive(self, max_messages: int, timeout: float) -> Batch:
        batch = self._batch
        batch.clear()
        connection = self._live()
        delivery = self.broker.get(connection, timeout)
        while delivery is not None:
            message_id, body, count, state, retried = delivery
            attributes = {"queue": "memory", **state}
            batch.add(body, message_id, attributes, message_id, count, retried=retried)
            if len(batch) >= max_messages:
                break
            delivery = self.broker.get(connection, 0.0)
        return batch

    def ack(self, handles: list[Any]) -> None:
        connection = self._live()
        for message_id in handles:
            self.broker.settle(connection, message_id, ack=True)

    def ack_out_of_order(self, handles: list[Any]) -> bool:
        self.ack(handles)  # by id: any order will do
        return True

    def requeue(self, handle: Any, delay: float = 0.0) -> None:
        self.broker.settle(self._live(), handle, ack=False, delay=delay)

    def retry_later(
        self, handle: Any, message: missive.Message, delay: float, state: dict[str, Any]
    ) -> None:
        # Kept by the broker, not this connection: a drop does not bring it back early.
        self.broker.settle(self._live(), handle, ack=False, delay=delay, state=state)

    def hand_back(self, batch: Batch, start: int) -> None:
        # Each goes back to the front of the queue: the last first keeps their order.
        for message_id in reversed(batch.handles[start:]):
            self.requeue(message_id)

    def wake(self, from_signal: bool) -> None:
        if not from_signal:  # a signal handler must not wait for the broker's lock
            self.broker.wake()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self.broker.disconnect(connection)

    def fault(self, exc: BaseException) -> Fault:
        return Fault.RECONNECT if isinstance(exc, ConnectionLostError) else Fault.FATAL

    def where(self) -> str:
        return "memory"

    def _live(self) -> int:
        if self._connection is None:
            raise ConnectionLostError("not connected")
        return self._connection


class MemoryAdapter(Adapter[Any]):
    """Consumes a :class:`MemoryBroker` through the delivery loop (a :class:`MemoryTransport`)."""

    batch_size = 10
    poll_timeout = 0.05

    def __init__(
        self,
        message_cls: type[missive.Message],
        processor: missive.Processor[Any],
        broker: MemoryBroker,
        **options: Any,
    ) -> None:
        super().__init__(message_cls, processor, **options)
        self.broker = broker

    def transport(self) -> MemoryTransport:
        """A new connection to the broker."""
        return MemoryTransport(self.broker)


class MemoryHarness:
    """The conformance ``Harness`` for :class:`MemoryAdapter`: a fresh broker per test."""

    name = "memory"
    capabilities = frozenset(
        {REDELIVERY, PERSISTENCE, CONSUMER_GROUPS, KILL_CONNECTION, DELAYED_RETRY}
    )

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
