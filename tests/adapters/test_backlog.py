"""The backlog the loop reports to observers: RabbitMQ's queue depth, a stream group's
lag plus pending, from the real brokers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import missive
from missive.events import Observer
from missive.testing.conformance.support import running, wait_until
from tests.adapters.test_rabbitmq import open_harness
from tests.conformance.redis_harness import RedisStreamsHarness
from tests.services import require


class BacklogRecorder(Observer):
    def __init__(self) -> None:
        self.depths: list[int] = []

    def backlog(self, depth: int) -> None:
        self.depths.append(depth)


@pytest.fixture(params=["rabbitmq", "redis-streams"])
def harness(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "rabbitmq":
        yield from open_harness("classic")
    else:
        require("redis")
        h = RedisStreamsHarness()
        yield h
        h.close()


def test_the_backlog_counts_what_waits_then_falls_to_zero(harness: Any) -> None:
    # Given 30 messages waiting, and a handler that holds the first until told
    harness.publish([b"b%d" % i for i in range(30)])
    release, handled = threading.Event(), []
    processor: missive.Processor[missive.RawMessage] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def hold(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        release.wait(10)
        handled.append(message.raw_data)
        ctx.ack()

    options = {"prefetch": 5} if hasattr(harness, "queue") else {"batch_size": 5}
    adapter = harness.adapter(missive.RawMessage, processor, **options)
    adapter.backlog_interval = 0.05
    recorder = adapter.add_observer(BacklogRecorder())
    # When the loop has taken at most five of them, then all are handled
    with running(adapter):
        wait_until(lambda: recorder.depths, "the first backlog is reported")
        first = recorder.depths[0]
        release.set()
        wait_until(lambda: len(handled) == 30, "the messages are handled")
        wait_until(lambda: recorder.depths[-1] == 0, "the backlog falls to zero")
    # Then the first figure counted those not yet handled, the prefetched ones aside
    # on RabbitMQ (unacked), and with them on Redis (pending)
    assert 25 <= first <= 30


def test_observers_find_the_running_transport_and_its_names(harness: Any) -> None:
    # Given an observer that reads the adapter's transport when the worker starts
    seen: list[tuple[str, str]] = []

    class Names(Observer):
        def worker_started(self, adapter: Any) -> None:
            transport = adapter.running_transport
            seen.append((transport.system, transport.source()))

    adapter = harness.adapter(missive.RawMessage, missive.Processor())
    adapter.add_observer(Names())
    assert adapter.running_transport is None
    # When it runs
    with running(adapter):
        pass
    # Then it saw the broker's system and the queue or stream, and nothing after the run
    name = harness.queue if hasattr(harness, "queue") else harness.stream
    assert seen == [("rabbitmq" if hasattr(harness, "queue") else "redis", name)]
    assert adapter.running_transport is None
