"""The adapter conformance suite against examples/queue_adapter.py, the documented
custom adapter: the example keeps the contract it describes."""

from __future__ import annotations

import itertools
import queue
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import missive
from missive.runtime import Capability
from missive.testing.conformance import (
    CONSUMER_GROUPS,
    PERSISTENCE,
    REDELIVERY,
    AdapterSuite,
    EventsSuite,
    WithOptions,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from queue_adapter import QueueAdapter, QueueTransport


class QueueHarness:
    """One ``queue.Queue`` per test; the example's adapters share it."""

    name = "queue example"
    capabilities = frozenset({REDELIVERY, PERSISTENCE, CONSUMER_GROUPS})

    def __init__(self) -> None:
        self.source: queue.Queue[tuple[bytes, bytes]] = queue.Queue()
        self.adapters: list[QueueAdapter[Any]] = []
        self._ids = itertools.count(1)
        self._published = 0

    def adapter(
        self, message_cls: type[missive.Message], processor: missive.Processor[Any], **options: Any
    ) -> QueueAdapter[Any]:
        adapter: QueueAdapter[Any] = QueueAdapter(message_cls, processor, self.source)
        for name, value in options.items():
            setattr(adapter, name, value)
        self.adapters.append(adapter)
        return adapter

    def publish(self, bodies: Iterable[bytes]) -> None:
        for body in bodies:
            self.source.put((b"q-%d" % next(self._ids), body))
            self._published += 1

    def publish_external(self, body: bytes) -> None:
        raise NotImplementedError("a queue.Queue has no publisher outside Python")

    def remaining(self) -> int:
        # What was published and not acked yet: waiting on the queue or in hand.
        return self._published - sum(len(adapter.done) for adapter in self.adapters)

    def kill_connections(self) -> None:
        raise NotImplementedError("a queue.Queue has no connection to drop")

    def close(self) -> None:
        """Nothing to delete: the queue lives in memory."""


def test_the_harness_declares_what_the_transport_can_do() -> None:
    flags = {REDELIVERY: Capability.REDELIVERY, PERSISTENCE: Capability.PERSISTENCE}
    flags[CONSUMER_GROUPS] = Capability.CONSUMER_GROUPS
    declared = {name for name, flag in flags.items() if QueueTransport.capabilities & flag}
    assert declared == QueueHarness.capabilities


@pytest.fixture
def harness() -> Iterator[QueueHarness]:
    h = QueueHarness()
    yield h
    h.close()


class TestQueueExampleConformance(AdapterSuite, EventsSuite):
    """Every test of both suites, on the example's queue adapter."""


class TestQueueExampleConcurrentConformance(AdapterSuite, EventsSuite):
    """Both suites again with eight messages in flight: a transport written for one
    message at a time needs nothing more (its acks wait for every earlier row)."""

    @pytest.fixture
    def harness(self, harness: QueueHarness) -> WithOptions:
        return WithOptions(harness, concurrency=8)
