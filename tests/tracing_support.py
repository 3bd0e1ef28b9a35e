"""What the tracing tests share: an SDK tracer provider with an in-memory exporter,
a publisher span whose context goes into a message's headers, and the checks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import missive

#: Put in every payload; it must appear in no span.
MARKER = "PAYLOAD-MARKER-7f3a"


class Traces:
    """A tracer provider that keeps every ended span in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name.startswith(prefix)]

    def consumers(self) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.kind is trace.SpanKind.CONSUMER]

    def publish_context(self) -> tuple[dict[str, str], trace.SpanContext]:
        """Headers carrying a publisher span's context (the span is ended), and it."""
        with self.tracer.start_as_current_span("publish", kind=trace.SpanKind.PRODUCER) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)
        return headers, span.get_span_context()


@pytest.fixture
def traces() -> Iterator[Traces]:
    t = Traces()
    yield t
    t.provider.shutdown()


def handler_recording_spans(
    traces: Traces, fail_times: int = 0, action: str = "ack"
) -> tuple[Any, list[str]]:
    """A handler that opens a span of its own ("db"), failing its first ``fail_times``
    calls with an exception quoting the payload; returns it and its call log.

    Its span does not record the exception: the SDK's default would put the
    exception's text (the payload here) in the handler's own span.
    """
    calls: list[str] = []
    lock = threading.Lock()

    def handler(message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
        with traces.tracer.start_as_current_span(
            "db", record_exception=False, set_status_on_exception=False
        ):
            with lock:
                calls.append(message.raw_data.decode())
                failing = len(calls) <= fail_times
            if failing:
                raise ValueError(f"cannot handle {message.raw_data!r}")
            if action == "nack":
                ctx.nack()
            else:
                ctx.ack()

    return handler, calls


def assert_no_marker(spans: list[ReadableSpan]) -> None:
    """The payload marker is in no span name, attribute, event or link."""
    for span in spans:
        texts = [span.name, *map(str, (span.attributes or {}).values())]
        for event in span.events:
            texts += [event.name, *map(str, (event.attributes or {}).values())]
        for link in span.links:
            texts += map(str, (link.attributes or {}).values())
        if span.status.description:
            texts.append(span.status.description)
        assert not [text for text in texts if MARKER in text], span.to_json()


def assert_nested(traces: Traces, consumer: ReadableSpan) -> None:
    """A "db" span of the handler is a child of ``consumer``, in its trace."""
    context = consumer.get_span_context()
    assert context is not None
    children = [
        span
        for span in traces.named("db")
        if span.parent is not None and span.parent.span_id == context.span_id
    ]
    parents = [span.parent for span in traces.named("db")]
    assert children, f"no db span under {context.span_id:x}; their parents: {parents}"
    assert all(child.context.trace_id == context.trace_id for child in children)


def event_names(span: ReadableSpan) -> list[str]:
    return [event.name for event in span.events]
