"""A publisher's trace context carried to the consumer span: through real RabbitMQ
(AMQP headers), real Redis Streams (an entry field) and HTTP (the WSGI adapter).

Each broker test uses its own queue or stream (random suffix), deleted afterwards.
Delayed retries wait 1 s on the brokers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pika
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, StatusCode

import missive
from missive.adapters.wsgi import WSGIAdapter
from missive.testing.conformance.support import running, wait_until
from missive.tracing import instrument
from tests.adapters.test_rabbitmq import RabbitMQHarness
from tests.adapters.test_wsgi import call
from tests.conformance.redis_harness import RedisStreamsHarness
from tests.services import require
from tests.tracing_support import (
    MARKER,
    Traces,
    assert_nested,
    assert_no_marker,
    event_names,
    handler_recording_spans,
    traces,
)

__all__ = ["traces"]  # the fixture, imported

#: One delayed retry, after 1 s (the RabbitMQ ladder's floor).
ONE_RETRY = missive.Retry(delayed=1, initial_delay=1, max_delay=1)


class Broker(Protocol):
    system: str

    def destination(self) -> str: ...
    def adapter(self, processor: missive.Processor[Any]) -> missive.Adapter[Any]: ...
    def publish(self, body: bytes, headers: dict[str, str]) -> None: ...


class RabbitMQ:
    """A fresh queue; the trace context goes in the AMQP headers."""

    system = "rabbitmq"

    def __init__(self) -> None:
        self.harness = RabbitMQHarness("classic")

    def destination(self) -> str:
        return self.harness.queue

    def adapter(self, processor: missive.Processor[Any]) -> missive.Adapter[Any]:
        return self.harness.adapter(missive.RawMessage, processor)

    def publish(self, body: bytes, headers: dict[str, str]) -> None:
        properties = pika.BasicProperties(message_id=uuid.uuid4().hex, headers=headers)
        self.harness.channel.basic_publish("", self.harness.queue, body, properties)

    def close(self) -> None:
        self.harness.close()


class RedisStreams:
    """A fresh stream and group; the trace context goes in fields beside ``data``."""

    system = "redis"

    def __init__(self) -> None:
        self.harness = RedisStreamsHarness()

    def destination(self) -> str:
        return self.harness.stream

    def adapter(self, processor: missive.Processor[Any]) -> missive.Adapter[Any]:
        return self.harness.adapter(missive.RawMessage, processor)

    def publish(self, body: bytes, headers: dict[str, str]) -> None:
        fields: dict[str, bytes] = {"data": body}
        fields.update((name, value.encode()) for name, value in headers.items())
        self.harness.client.xadd(self.harness.stream, fields)  # type: ignore[arg-type]

    def close(self) -> None:
        self.harness.close()


@pytest.fixture(params=["rabbitmq", "redis"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    require(request.param)
    b = RabbitMQ() if request.param == "rabbitmq" else RedisStreams()
    try:
        yield b
    finally:
        b.close()


def consumers_of(traces: Traces, publisher: SpanContext) -> list[ReadableSpan]:
    return [
        span
        for span in traces.consumers()
        if span.parent is not None and span.parent.span_id == publisher.span_id
    ]


def assert_carried(span: ReadableSpan, publisher: SpanContext) -> None:
    """``span`` is the publisher's child, in its trace (no link: the parent says it)."""
    assert span.context is not None
    assert span.parent is not None
    assert span.context.trace_id == publisher.trace_id
    assert span.parent.span_id == publisher.span_id
    assert list(span.links) == []


def test_the_publisher_context_is_the_consumer_spans_parent_through_the_broker(
    traces: Traces, broker: Broker
) -> None:
    # Given a publisher span whose context is in the message's headers
    handler, _ = handler_recording_spans(traces)
    processor: missive.Processor[Any] = missive.Processor()
    processor.handle_for(lambda m: True)(handler)
    adapter = broker.adapter(processor)
    instrument(adapter, traces.provider)
    headers, publisher = traces.publish_context()
    assert set(headers) >= {"traceparent"}
    # When the message goes through the broker and is handled
    broker.publish(f"order {MARKER}".encode(), headers)
    with running(adapter):
        wait_until(lambda: consumers_of(traces, publisher), "the consumer span ends")
    # Then its consumer span continues the publisher's trace, with its attributes
    [consumer] = consumers_of(traces, publisher)
    assert_carried(consumer, publisher)
    assert consumer.name == f"process {broker.destination()}"
    attributes = dict(consumer.attributes or {})
    assert attributes["messaging.system"] == broker.system
    assert attributes["messaging.destination.name"] == broker.destination()
    assert attributes["messaging.operation.type"] == "process"
    assert "messaging.message.id" in attributes
    assert attributes["missive.outcome"] == "acked"
    # and the handler's own span is its child; no payload, no header value beyond it
    assert_nested(traces, consumer)
    assert_no_marker(traces.spans())


def test_a_retry_and_a_dead_letter_are_span_events_through_the_broker(
    traces: Traces, broker: Broker
) -> None:
    # Given a handler that fails "flaky" once (retried 1 s later) and "poison" always
    handler, calls = handler_recording_spans(traces, fail_times=0)
    failed: set[str] = set()

    def flaky_or_poison(message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
        text = message.raw_data.decode()
        if text.startswith("poison") or (text.startswith("flaky") and text not in failed):
            failed.add(text)
            raise ValueError(f"cannot handle {text}")
        handler(message, ctx)

    processor: missive.Processor[Any] = missive.Processor()
    processor.handle_for(lambda m: True, retry=ONE_RETRY)(flaky_or_poison)
    dlq: dict[bytes, Any] = {}
    processor.set_dlq(dlq)
    adapter = broker.adapter(processor)
    instrument(adapter, traces.provider)
    flaky_headers, flaky = traces.publish_context()
    poison_headers, poison = traces.publish_context()
    # When both go through the broker
    broker.publish(f"flaky {MARKER}".encode(), flaky_headers)
    broker.publish(f"poison {MARKER}".encode(), poison_headers)
    with running(adapter):
        wait_until(
            lambda: len(consumers_of(traces, flaky)) + len(consumers_of(traces, poison)) == 4,
            "both messages are settled after their retry",
        )
    # Then the flaky one's first span ends retried, its second acked, both in its trace
    first, second = sorted(consumers_of(traces, flaky), key=lambda span: span.start_time or 0)
    for span in (first, second):
        assert_carried(span, flaky)
    assert event_names(first) == ["exception", "missive.retry"]
    assert dict(first.attributes or {})["missive.outcome"] == "retried"
    assert first.status.status_code is StatusCode.ERROR
    assert dict(second.attributes or {})["missive.outcome"] == "acked"
    assert_nested(traces, second)
    # and the poison one is retried, then dead-lettered with an event and an error status
    last = max(consumers_of(traces, poison), key=lambda span: span.start_time or 0)
    assert event_names(last)[-1] == "missive.dead_letter"
    assert dict(last.attributes or {})["missive.outcome"] == "dead_lettered"
    assert last.status.status_code is StatusCode.ERROR
    assert len(dlq) == 1
    assert calls == [f"flaky {MARKER}"]
    assert_no_marker(traces.spans())


def wsgi_adapter(
    traces: Traces, handler: Callable[..., None], parent: bool = True, **options: Any
) -> WSGIAdapter[missive.Message]:
    processor: missive.Processor[Any] = missive.Processor()
    processor.handle_for(lambda m: True, retry=ONE_RETRY)(handler)
    adapter = WSGIAdapter(missive.RawMessage, processor, **options)
    instrument(adapter, traces.provider, parent=parent)
    return adapter


def test_the_publisher_context_in_http_headers_is_the_consumer_spans_parent(
    traces: Traces,
) -> None:
    # Given a WSGI adapter and a request carrying a publisher's context
    handler, _ = handler_recording_spans(traces)
    adapter = wsgi_adapter(traces, handler, drop_headers={"authorization"})
    headers, publisher = traces.publish_context()
    try:
        # When it is posted
        response = call(
            adapter,
            path="/",
            body=f"order {MARKER}".encode(),
            headers={**headers, "Authorization": "Bearer secret-token"},
        )
    finally:
        adapter.close()
    # Then the consumer span continues the trace, named for the path
    assert response.status == 200
    [consumer] = consumers_of(traces, publisher)
    assert_carried(consumer, publisher)
    assert consumer.name == "process /"
    attributes = dict(consumer.attributes or {})
    assert attributes["messaging.system"] == "http"
    assert attributes["messaging.destination.name"] == "/"
    assert_nested(traces, consumer)
    assert_no_marker(traces.spans())
    assert "secret-token" not in str([span.to_json() for span in traces.spans()])


def test_an_http_retry_is_a_span_event_and_the_request_is_answered_503(
    traces: Traces,
) -> None:
    # Given a handler that always fails, retried once later
    def failing(message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
        raise ValueError(f"cannot handle {message.raw_data!r}")

    adapter = wsgi_adapter(traces, failing)
    headers, publisher = traces.publish_context()
    try:
        # When a request carrying a publisher's context is posted
        response = call(adapter, path="/", body=MARKER.encode(), headers=headers)
    finally:
        adapter.close()
    # Then the sender is told to retry, and the span ends retried
    assert response.status == 503
    [consumer] = consumers_of(traces, publisher)
    assert event_names(consumer) == ["exception", "missive.retry"]
    assert dict(consumer.attributes or {})["missive.outcome"] == "retried"
    assert_no_marker(traces.spans())


def test_with_parent_false_the_consumer_span_starts_a_trace_linked_to_the_publisher(
    traces: Traces,
) -> None:
    # Given Tracing that links rather than parents
    handler, _ = handler_recording_spans(traces)
    adapter = wsgi_adapter(traces, handler, parent=False)
    headers, publisher = traces.publish_context()
    try:
        # When a request carrying a publisher's context is posted
        assert call(adapter, path="/", body=b"{}", headers=headers).status == 200
    finally:
        adapter.close()
    # Then its span has no parent, another trace, and one link to the publisher
    [consumer] = traces.consumers()
    assert consumer.parent is None
    assert consumer.context is not None
    assert consumer.context.trace_id != publisher.trace_id
    assert [link.context.span_id for link in consumer.links] == [publisher.span_id]
    assert_nested(traces, consumer)
