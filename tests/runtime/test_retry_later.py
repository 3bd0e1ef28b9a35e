"""Delayed retries on the delivery loop: Transport.retry_later on the in-memory broker
(serial, threads, async), max_deliveries counting the retries, a transport that cannot
delay one, ctx.nack(delay=...), and the WSGI adapter's 503 with Retry-After."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import missive
from missive.adapters.wsgi import WSGIAdapter
from missive.attempts import HISTORY, RETRIES
from missive.events import Observer
from missive.runtime import Capability
from missive.testing.conformance import MemoryHarness, running, wait_until
from missive.testing.conformance.memory import MemoryAdapter, MemoryTransport
from tests.adapters.test_wsgi import call

Ctx = missive.HandlingContext[Any]
QUICK = missive.Retry(delayed=3, initial_delay=0.01, max_delay=0.02)


@pytest.fixture
def harness() -> Iterator[MemoryHarness]:
    h = MemoryHarness()
    yield h
    h.close()


class Events(Observer):
    """Records the delivery events a test looks at."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.retries: list[tuple[missive.Message, float]] = []
        self.requeues: list[float] = []
        self.counts: list[int | None] = []

    def retried(self, message: missive.Message, delay: float) -> None:
        with self.lock:
            self.retries.append((message, delay))

    def requeued(self, message: missive.Message, delay: float) -> None:
        with self.lock:
            self.requeues.append(delay)

    def message_received(self, message: missive.Message, delivery_count: int | None) -> None:
        with self.lock:
            self.counts.append(delivery_count)


class Flaky:
    """Fails the first ``failures`` deliveries of each message, then acks; records them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.__qualname__ = "Flaky"  # the handler's name in reasons
        self.lock = threading.Lock()
        self.seen: list[missive.Message] = []
        self.acked: list[missive.Message] = []

    def __call__(self, message: missive.Message, ctx: Ctx) -> None:
        with self.lock:
            self.seen.append(message)
            tries = sum(1 for seen in self.seen if seen.message_id == message.message_id)
        if tries <= self.failures:
            raise ConnectionError("database down")
        with self.lock:
            self.acked.append(message)
        ctx.ack()


class AsyncFlaky(Flaky):
    async def __call__(self, message: missive.Message, ctx: Ctx) -> None:  # type: ignore[override]
        Flaky.__call__(self, message, ctx)


def processor_for(
    handler: Any, retry: missive.Retry = QUICK
) -> tuple[missive.Processor[Any], dict[bytes, Any], Events]:
    processor: missive.Processor[Any] = missive.Processor(retry=retry)
    processor.handle_for(lambda m: True)(handler)
    dlq: dict[bytes, Any] = {}
    processor.set_dlq(dlq)
    events = Events()
    processor.add_observer(events)
    return processor, dlq, events


@pytest.mark.parametrize(
    ("handler_class", "concurrency"),
    [(Flaky, 1), (Flaky, 4), (AsyncFlaky, 1), (AsyncFlaky, 4)],
    ids=["serial", "threads4", "async1", "async4"],
)
def test_failed_messages_come_back_after_a_delay_and_are_handled(
    harness: MemoryHarness, handler_class: type[Flaky], concurrency: int
) -> None:
    handler = handler_class(failures=2)
    processor, dlq, events = processor_for(handler)
    harness.publish(b"%d" % i for i in range(10))

    with running(harness.adapter(missive.RawMessage, processor, concurrency=concurrency)):
        wait_until(lambda: len(handler.acked) == 10, "every message handled after 2 retries")

    assert dlq == {}
    assert len(events.retries) == 20
    assert all(0.0 <= delay <= 0.02 for _, delay in events.retries)
    assert sorted(m.attributes[RETRIES] for m in handler.acked) == [2] * 10
    assert harness.remaining() == 0


def test_the_state_comes_back_in_the_attributes_and_the_count_goes_on(
    harness: MemoryHarness,
) -> None:
    handler = Flaky(failures=1)
    processor, _, events = processor_for(handler)
    harness.publish([b"one"])

    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: handler.acked, "the retried message handled")

    first, again = handler.seen
    assert again.message_id == first.message_id
    assert again.attributes["queue"] == "memory"
    assert again.attributes[RETRIES] == 1
    assert again.attributes[HISTORY][0]["reason"] == "handler 'Flaky' raised ConnectionError"
    assert events.counts == [1, 2]


def test_exhausted_retries_dead_letter_with_the_history(harness: MemoryHarness) -> None:
    handler = Flaky(failures=100)
    processor, dlq, events = processor_for(handler)
    harness.publish([b"one"])

    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: dlq, "the message dead-lettered")

    message, reason = next(iter(dlq.values()))
    assert len(handler.seen) == 4
    assert len(message.attributes[HISTORY]) == 4
    assert message.attributes[RETRIES] == 3
    assert "attempts (4):" in reason
    assert len(events.retries) == 3


def test_max_deliveries_counts_the_retries(harness: MemoryHarness) -> None:
    handler = Flaky(failures=100)
    processor, dlq, _ = processor_for(handler, missive.Retry(delayed=10, initial_delay=0.01))
    harness.publish([b"one"])

    adapter = harness.adapter(missive.RawMessage, processor)
    adapter.max_deliveries = 3
    with running(adapter):
        wait_until(lambda: dlq, "the message dead-lettered")

    message, reason = next(iter(dlq.values()))
    assert len(handler.seen) == 3
    assert reason.summary == (
        "handler 'Flaky' raised ConnectionError; not retried later: delivered 3 times, "
        "max_deliveries=3"
    )
    assert message.attributes[RETRIES] == 2
    assert message.attributes[HISTORY][-1]["delay"] is None


class NoDelayTransport(MemoryTransport):
    capabilities: ClassVar[Capability] = MemoryTransport.capabilities & ~Capability.DELAYED_RETRY


class NoDelayAdapter(MemoryAdapter):
    def transport(self) -> MemoryTransport:
        return NoDelayTransport(self.broker)


def test_a_transport_that_cannot_delay_keeps_immediate_retries_then_dead_letters(
    harness: MemoryHarness,
) -> None:
    handler = Flaky(failures=100)
    policy = missive.Retry(immediate=2, delayed=3, initial_delay=0.01)
    processor, dlq, events = processor_for(handler, policy)
    harness.publish([b"one"])

    with running(NoDelayAdapter(missive.RawMessage, processor, harness.broker)):
        wait_until(lambda: dlq, "the message dead-lettered")

    message, reason = next(iter(dlq.values()))
    assert len(handler.seen) == 3
    assert events.retries == []
    assert reason.summary == (
        "handler 'Flaky' raised ConnectionError; not retried later: this transport cannot "
        "delay a retry"
    )
    assert [entry["delay"] for entry in message.attributes[HISTORY]] == [0.0, 0.0, None]


def test_ctx_nack_with_a_delay_requeues_after_it(harness: MemoryHarness) -> None:
    calls: list[int] = []

    def handler(message: missive.Message, ctx: Ctx) -> None:
        calls.append(1)
        if len(calls) == 1:
            ctx.nack(delay=0.05)
        else:
            ctx.ack()

    processor, _, events = processor_for(handler)
    harness.publish([b"one"])

    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: len(calls) == 2, "the nacked message handled again")

    assert events.requeues == [0.05]
    assert events.retries == []


def test_wsgi_answers_503_with_retry_after_set_to_the_next_delay() -> None:
    processor, _, events = processor_for(
        Flaky(failures=100), missive.Retry(delayed=3, initial_delay=20, max_delay=60)
    )
    adapter = WSGIAdapter(missive.RawMessage, processor)
    try:
        response = call(adapter, body=b"{}")
    finally:
        adapter.close()

    [(_, delay)] = events.retries
    assert response.status == 503
    assert response.headers["Retry-After"] == str(math.ceil(delay))
    assert response.json["status"] == "retry"


def test_wsgi_answers_ctx_retry_with_its_delay_rounded_up() -> None:
    processor, _, _ = processor_for(lambda m, ctx: ctx.retry(delay=2.5))
    adapter = WSGIAdapter(missive.RawMessage, processor)
    try:
        response = call(adapter, body=b"{}")
    finally:
        adapter.close()

    assert response.status == 503
    assert response.headers["Retry-After"] == "3"


def test_wsgi_dead_letters_once_the_policy_is_exhausted() -> None:
    processor, dlq, _ = processor_for(lambda m, ctx: ctx.retry(delay=2.5), missive.NO_RETRY)
    adapter = WSGIAdapter(missive.RawMessage, processor)
    try:
        response = call(adapter, body=b"{}")
    finally:
        adapter.close()

    assert response.status == 202
    assert len(dlq) == 1


def test_wsgi_answers_a_nack_with_a_delay_with_it_rounded_up() -> None:
    processor: missive.Processor[Any] = missive.Processor()
    processor.handle_for(lambda m: True)(lambda m, ctx: ctx.nack(delay=0.2))
    adapter = WSGIAdapter(missive.RawMessage, processor)
    try:
        response = call(adapter, body=b"{}")
    finally:
        adapter.close()

    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json["status"] == "nacked"


def test_retried_messages_run_side_by_side_unlike_redeliveries(harness: MemoryHarness) -> None:
    # Given four workers and a handler that fails each message once, then takes a while
    lock, running_now, most = threading.Lock(), [0], [0]

    def slow_second_time(message: missive.Message, ctx: Ctx) -> None:
        if message.attributes.get(RETRIES) is None:
            raise ConnectionError("database down")
        with lock:
            running_now[0] += 1
            most[0] = max(most[0], running_now[0])
        threading.Event().wait(0.05)
        with lock:
            running_now[0] -= 1
        ctx.ack()

    retry = missive.Retry(delayed=1, initial_delay=0.01)
    processor, dlq, events = processor_for(slow_second_time, retry)
    assert events.counts == []
    harness.publish(b"%d" % i for i in range(8))
    # When every message comes back by a delayed retry (count 2: not a first delivery)
    with running(harness.adapter(missive.RawMessage, processor, concurrency=4)):
        wait_until(lambda: harness.remaining() == 0, "all retried and acked")
    # Then they ran together: their last delivery ended cleanly, no crash to isolate
    assert sorted(events.counts) == [1] * 8 + [2] * 8
    assert most[0] > 1
    assert dlq == {}
