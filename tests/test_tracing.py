"""missive.tracing on the stdin adapter: spans, nesting, failures, cost when off.

The brokers (RabbitMQ, Redis Streams) and HTTP, which carry a publisher's trace
context, are in tests/adapters/test_tracing_brokers.py.
"""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import ProxyTracerProvider, StatusCode

import missive
from missive._tracing_carrier import CARRIER_GETTER, carrier
from missive.adapters.stdin import StdinAdapter
from missive.tracing import Tracing, instrument
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


def run_stdin(
    processor: missive.Processor[Any], lines: list[str], **options: Any
) -> StdinAdapter[Any]:
    """Run a stdin adapter over ``lines`` to the end of its input."""
    data = "".join(f"{line}\n" for line in lines).encode()
    adapter: StdinAdapter[Any] = StdinAdapter(
        missive.RawMessage, processor, io.BytesIO(data), **options
    )
    adapter.run()
    return adapter


def processor_with(handler: Any, immediate: int = 0) -> missive.Processor[Any]:
    processor: missive.Processor[Any] = missive.Processor()
    retry = missive.Retry(immediate=immediate) if immediate else None
    processor.handle_for(lambda m: True, retry=retry)(handler)
    return processor


def test_each_message_gets_one_consumer_span_with_the_messaging_attributes(
    traces: Traces,
) -> None:
    # Given a traced processor on stdin
    handler, _ = handler_recording_spans(traces)
    processor = processor_with(handler)
    instrument(processor, traces.provider)
    # When two lines are consumed
    run_stdin(processor, [f"one {MARKER}", f"two {MARKER}"])
    # Then each has one consumer span, named for its destination, with the attributes
    consumers = traces.consumers()
    assert [span.name for span in consumers] == ["process stdin", "process stdin"]
    attributes = dict(consumers[0].attributes or {})
    assert attributes["messaging.system"] == "stdin"
    assert attributes["messaging.destination.name"] == "stdin"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.operation"] == "process"
    assert attributes["missive.outcome"] == "acked"
    assert str(attributes["missive.handler"]).endswith("handler")
    assert isinstance(attributes["messaging.message.id"], str)
    assert consumers[0].parent is None  # no publisher context on stdin
    assert consumers[0].status.status_code is StatusCode.UNSET
    assert_no_marker(traces.spans())


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_handlers_own_spans_nest_under_the_consumer_span(
    traces: Traces, kind: str, concurrency: int
) -> None:
    # Given a handler (sync or async def) that opens a span of its own
    def sync_handler(message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
        with traces.tracer.start_as_current_span("db"):
            ctx.ack()

    async def async_handler(message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
        with traces.tracer.start_as_current_span("db"):
            ctx.ack()

    processor = processor_with(sync_handler if kind == "sync" else async_handler)
    instrument(processor, traces.provider)
    # When eight messages are consumed, one or four at a time
    run_stdin(processor, [str(n) for n in range(8)], concurrency=concurrency)
    # Then each handler span is the child of its own message's span
    consumers = traces.consumers()
    assert len(consumers) == 8
    assert len(traces.named("db")) == 8
    for consumer in consumers:
        assert_nested(traces, consumer)


def test_a_sync_handler_run_beside_async_ones_nests_too(traces: Traces) -> None:
    # Given an async hook, so that handlers run from the event loop, and a sync handler
    handler, _ = handler_recording_spans(traces)
    processor = processor_with(handler)

    async def hook(pctx: missive.ProcessingContext[Any], ctx: missive.HandlingContext[Any]) -> None:
        pass

    processor.before_handling(hook)
    instrument(processor, traces.provider)
    # When messages are consumed four at a time (the sync handler in the executor)
    run_stdin(processor, [str(n) for n in range(8)], concurrency=4)
    # Then its spans nest under the consumer spans
    for consumer in traces.consumers():
        assert_nested(traces, consumer)


def test_a_failed_attempt_is_an_exception_event_without_the_exception_text(
    traces: Traces,
) -> None:
    # Given a handler that fails once (its exception quotes the payload), retried at once
    handler, calls = handler_recording_spans(traces, fail_times=1)
    processor = processor_with(handler, immediate=1)
    instrument(processor, traces.provider)
    # When a message is consumed
    run_stdin(processor, [f"order {MARKER}"])
    # Then one span records the failed attempt and the retry, and ends acked
    assert len(calls) == 2
    [consumer] = traces.consumers()
    assert event_names(consumer) == ["exception", "missive.retry"]
    exception = dict(consumer.events[0].attributes or {})
    assert exception["exception.type"] == "ValueError"
    assert str(exception["exception.message"]).endswith("raised ValueError")
    assert 'tracing_support.py", line' in str(exception["exception.stacktrace"])
    assert dict(consumer.attributes or {})["missive.outcome"] == "acked"
    assert consumer.status.status_code is StatusCode.UNSET
    assert_no_marker(traces.spans())


def test_a_dead_lettered_message_has_a_dead_letter_event_and_an_error_status(
    traces: Traces,
) -> None:
    # Given a handler that always fails, retried once at once, and a DLQ
    handler, _ = handler_recording_spans(traces, fail_times=99)
    processor = processor_with(handler, immediate=1)
    dlq: dict[bytes, Any] = {}
    processor.set_dlq(dlq)
    instrument(processor, traces.provider)
    # When a message is consumed
    run_stdin(processor, [f"order {MARKER}"])
    # Then it is dead-lettered, and its span says so
    assert len(dlq) == 1
    [consumer] = traces.consumers()
    names = event_names(consumer)
    assert names == ["exception", "missive.retry", "exception", "missive.dead_letter"]
    attributes = dict(consumer.attributes or {})
    assert attributes["missive.outcome"] == "dead_lettered"
    assert consumer.status.status_code is StatusCode.ERROR
    assert "raised ValueError" in (consumer.status.description or "")
    assert_no_marker(traces.spans())


def test_a_nacked_message_without_redelivery_is_dead_lettered_in_its_span(
    traces: Traces,
) -> None:
    # Given a handler that nacks, on stdin (which cannot redeliver) with a DLQ
    handler, _ = handler_recording_spans(traces, action="nack")
    processor = processor_with(handler)
    processor.set_dlq({})
    instrument(processor, traces.provider)
    # When a message is consumed
    run_stdin(processor, [MARKER])
    # Then the span ends dead-lettered
    [consumer] = traces.consumers()
    assert dict(consumer.attributes or {})["missive.outcome"] == "dead_lettered"
    assert "missive.dead_letter" in event_names(consumer)


def test_without_a_tracer_provider_no_span_is_made_or_current() -> None:
    if not isinstance(trace.get_tracer_provider(), ProxyTracerProvider):
        pytest.skip("a global tracer provider was set by another test in this process")
    # Given Tracing on the global provider, which is the API's default (no SDK)
    seen: list[trace.Span] = []

    def handler(message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
        seen.append(trace.get_current_span())
        ctx.ack()

    processor = processor_with(handler)
    tracing = instrument(processor)
    # When messages are consumed
    run_stdin(processor, ["a", "b"])
    # Then no span is current in the handler, and none is kept open
    assert seen == [trace.INVALID_SPAN, trace.INVALID_SPAN]
    assert tracing._open == {}


def test_instrument_registers_a_tracing_observer_on_an_adapter(traces: Traces) -> None:
    processor = processor_with(lambda m, ctx: ctx.ack())
    adapter: StdinAdapter[Any] = StdinAdapter(missive.RawMessage, processor, io.BytesIO(b""))
    tracing = instrument(adapter, traces.provider)
    assert isinstance(tracing, Tracing)
    assert list(processor.observers) == [tracing]


def test_the_carrier_getter_reads_str_and_bytes_keys_and_values() -> None:
    assert CARRIER_GETTER.get({"traceparent": "00-a"}, "traceparent") == ["00-a"]
    assert CARRIER_GETTER.get({"traceparent": b"00-b"}, "traceparent") == ["00-b"]
    assert CARRIER_GETTER.get({b"traceparent": b"00-c"}, "traceparent") == ["00-c"]
    assert CARRIER_GETTER.get({"traceparent": 7}, "traceparent") is None
    assert CARRIER_GETTER.get({}, "tracestate") is None
    assert carrier({"fields": {"traceparent": b"x"}}) == {"traceparent": b"x"}
    assert carrier({"headers": {}, "queue": "q"}) is None


def test_without_the_otel_extra_the_import_error_names_it() -> None:
    code = "import sys; sys.modules['opentelemetry'] = None; import missive.tracing"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "pip install 'missive[otel]'" in result.stderr
