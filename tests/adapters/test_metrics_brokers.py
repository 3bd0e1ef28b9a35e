"""missive.metrics on real brokers: a RabbitMQ queue and a Redis stream consumed in
process, each test on its own queue or stream (random suffix), deleted afterwards."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Protocol

import pytest
from prometheus_client import CollectorRegistry

import missive
import missive.metrics
from missive.testing.conformance.support import TIMEOUT, running, wait_until
from tests.adapters.test_rabbitmq import RabbitMQHarness
from tests.conformance.redis_harness import RedisStreamsHarness
from tests.services import require

Ctx = missive.HandlingContext[Any]
SECRET = "iban-DE89370400440532013000"  # stands for customer data: never in a metric


class Harness(Protocol):
    def adapter(
        self, message_cls: type[missive.Message], processor: missive.Processor[Any], **options: Any
    ) -> missive.Adapter[Any]: ...

    def publish(self, bodies: list[bytes]) -> None: ...


class Broker:
    """A harness, its labels, and the adapter options a test needs on it."""

    def __init__(self, harness: Harness, system: str, source: str, **options: Any) -> None:
        self.harness = harness
        self.labels = {"adapter": system, "source": source}
        self.options = options


@pytest.fixture(params=["rabbitmq", "redis-streams"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    harness: RabbitMQHarness | RedisStreamsHarness
    if request.param == "rabbitmq":
        require("rabbitmq")
        harness = RabbitMQHarness()
        # A prefetch of 5 leaves the rest of the queue ready: its depth.
        opened = Broker(harness, "rabbitmq", harness.queue, prefetch=5)
    else:
        require("redis")
        harness = RedisStreamsHarness()
        opened = Broker(harness, "redis", harness.stream)
    try:
        yield opened
    finally:
        harness.close()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def outcome(registry: CollectorRegistry, broker: Broker, handler: str, what: str) -> float:
    labels = {**broker.labels, "handler": handler, "outcome": what}
    return registry.get_sample_value("missive_message_outcomes_total", labels) or 0.0


def value(registry: CollectorRegistry, broker: Broker, name: str) -> float | None:
    return registry.get_sample_value(name, broker.labels)


def acks(message: missive.Message, ctx: Ctx) -> None:
    ctx.ack()


def fails(message: missive.Message, ctx: Ctx) -> None:
    raise ValueError(f"cannot parse {message.raw_data!r}")


def starts_with(prefix: bytes) -> Any:
    return lambda message: message.raw_data.startswith(prefix)


def processor_for(handlers: dict[bytes, Any]) -> missive.Processor[missive.Message]:
    """Routes by body prefix; failures go to an in-memory DLQ."""
    processor: missive.Processor[missive.Message] = missive.Processor()
    for prefix, handler in handlers.items():
        processor.handle_for(starts_with(prefix))(handler)
    processor.set_dlq({})
    return processor


def test_the_outcomes_of_a_real_queue_are_counted_exactly(
    broker: Broker, registry: CollectorRegistry
) -> None:
    # Given 12 messages to ack, 3 that fail, 2 whose handler asks once for a retry
    retried: set[bytes] = set()
    lock = threading.Lock()

    def retry_once(message: missive.Message, ctx: Ctx) -> None:
        with lock:
            first = message.message_id not in retried
            retried.add(message.message_id)
        ctx.retry(delay=0.01) if first else ctx.ack()

    processor = processor_for({b"ok": acks, b"bad": fails})
    processor.handle_for(starts_with(b"retry"), retry=missive.Retry(delayed=1))(retry_once)
    missive.metrics.instrument(processor, registry)
    bodies = [b"ok-%d" % i for i in range(12)] + [b"bad-1", b"bad-2", b"bad-3"]
    broker.harness.publish([*bodies, b"retry-1", b"retry-2"])
    # When they are consumed
    with running(broker.harness.adapter(missive.RawMessage, processor, **broker.options)):
        wait_until(lambda: outcome(registry, broker, "retry_once", "acked") == 2, "retries acked")
        wait_until(lambda: outcome(registry, broker, "acks", "acked") == 12, "the rest acked")
    # Then each delivery has exactly one outcome, under its handler and the queue's labels
    assert outcome(registry, broker, "fails", "dead_lettered") == 3
    assert outcome(registry, broker, "fails", "acked") == 0
    assert outcome(registry, broker, "retry_once", "retried") == 2
    assert value(registry, broker, "messaging_client_consumed_messages_total") == 19
    assert value(registry, broker, "missive_messages_in_flight") == 0
    duration = {**broker.labels, "handler": "acks"}
    assert registry.get_sample_value("messaging_process_duration_seconds_count", duration) == 12
    writes = {**broker.labels, "result": "stored"}
    assert registry.get_sample_value("missive_dlq_writes_total", writes) == 3


def test_the_backlog_gauge_follows_the_broker(broker: Broker, registry: CollectorRegistry) -> None:
    # Given 20 messages waiting, and a handler held on the first one
    release = threading.Event()

    def held(message: missive.Message, ctx: Ctx) -> None:
        release.wait(TIMEOUT)
        ctx.ack()

    processor = processor_for({b"": held})
    missive.metrics.instrument(processor, registry)
    broker.harness.publish([b"%d" % i for i in range(20)])
    adapter = broker.harness.adapter(missive.RawMessage, processor, **broker.options)
    adapter.backlog_interval = 0.05
    with running(adapter):
        # When the consumer is stuck, the backlog shows what waits (all but the prefetch)
        wait_until(
            lambda: (value(registry, broker, "missive_backlog_messages") or 0) >= 15,
            "the backlog counted",
        )
        # And once it moves on, the backlog drains to 0
        release.set()
        wait_until(
            lambda: value(registry, broker, "missive_backlog_messages") == 0, "the backlog drained"
        )


def test_no_payload_or_error_text_reaches_the_exposition(
    broker: Broker, registry: CollectorRegistry
) -> None:
    # Given messages carrying customer data, one failing with it in the exception
    processor = processor_for({b"ok": acks, b"bad": fails})
    missive.metrics.instrument(processor, registry)
    broker.harness.publish([f"ok {SECRET}".encode(), f"bad {SECRET}".encode(), SECRET.encode()])
    # When they are consumed (one acked, two dead-lettered)
    with running(broker.harness.adapter(missive.RawMessage, processor, **broker.options)):
        wait_until(
            lambda: (
                outcome(registry, broker, "", "dead_lettered") == 1
                and outcome(registry, broker, "fails", "dead_lettered") == 1
                and outcome(registry, broker, "acks", "acked") == 1
            ),
            "every message settled",
        )
    # Then the exposition names the queue and handlers, never the data or the error
    body, _ = missive.metrics.exposition(registry)
    assert broker.labels["source"].encode() in body
    assert SECRET.encode() not in body
    assert b"cannot parse" not in body
