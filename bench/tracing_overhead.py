"""What missive.tracing costs beyond the OpenTelemetry SDK, without a broker.

Two measures, each interleaved over ``--repeat`` rounds, CPU time of this process
per message (medians):

* **events**: the observer's events called directly for each message
  (``message_received``, ``handling_started``, ``handling_finished``, ``acked``) on
  messages whose headers carry a ``traceparent`` (AMQP-like ``str`` headers, and
  Redis Streams-like ``bytes`` fields), against the bare SDK doing the same work:
  extract the context from a dict, start a CONSUMER span with the same attributes,
  attach and detach it, set the outcome and handler, end it;
* **loop**: the delivery loop over an in-memory transport (batches of 100 rows with
  a ``traceparent`` header) with no observer, with a minimal observer doing the
  bare SDK's work, and with ``missive.tracing``.

Spans go to a ``SimpleSpanProcessor`` (``--batch``: a ``BatchSpanProcessor``) over
an exporter that drops them.

    python bench/tracing_overhead.py [--messages 20000] [--repeat 7] [--batch]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind

import missive
from missive.adapters.stdin import StdinAdapter
from missive.events import Observer
from missive.runtime.transport import Batch, Transport
from missive.tracing import Tracing

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BATCHED = [False]


class DropExporter(SpanExporter):
    """Takes every span and sends it nowhere."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def provider() -> TracerProvider:
    made = TracerProvider()
    processor = BatchSpanProcessor if BATCHED[0] else SimpleSpanProcessor
    made.add_span_processor(processor(DropExporter()))
    return made


class Bare(Observer):
    """The bare SDK's work for each message, as an observer."""

    def __init__(self, tracer_provider: TracerProvider) -> None:
        self.tracer = tracer_provider.get_tracer("bare")
        self.open: dict[int, list[Any]] = {}

    def message_received(self, message: Any, delivery_count: Any) -> None:
        span = self.tracer.start_span(
            "process orders",
            context=propagate.extract(message.attributes["headers"]),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "redis",
                "messaging.destination.name": "orders",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.operation": "process",
                "messaging.message.id": message.message_id.decode(),
            },
        )
        self.open[id(message)] = [span, None]

    def handling_started(self, pctx: Any, hctx: Any) -> None:
        delivery = self.open[id(hctx.message)]
        delivery[1] = otel_context.attach(trace.set_span_in_context(delivery[0]))

    def handling_finished(self, pctx: Any, hctx: Any, outcome: Any, duration: float) -> None:
        otel_context.detach(self.open[id(hctx.message)][1])

    def acked(self, message: Any) -> None:
        span = self.open.pop(id(message))[0]
        span.set_attributes({"missive.outcome": "acked", "missive.handler": "handle"})
        span.end()


def messages(count: int, bytes_fields: bool) -> list[missive.Message]:
    if bytes_fields:  # a Redis Streams entry's other fields
        attributes: dict[str, Any] = {"fields": {b"traceparent": TRACEPARENT.encode()}}
    else:  # AMQP headers
        attributes = {"headers": {"traceparent": TRACEPARENT}}
    return [missive.JSONMessage(b"{}", b"1700000000000-%d" % i, attributes) for i in range(count)]


class _Handling:
    __slots__ = ("failure", "handler_name", "message")

    def __init__(self, message: missive.Message) -> None:
        self.message, self.handler_name, self.failure = message, "handle", None


class _Running:
    class running_transport:  # noqa: N801  # what worker_started reads
        system = "redis"

        @staticmethod
        def source() -> str:
            return "orders"


def events(observer: Observer, msgs: list[missive.Message]) -> float:
    """CPU seconds a message for the four events of a message handled and acked."""
    observer.worker_started(_Running())
    handlings = [_Handling(m) for m in msgs]
    received, started = observer.message_received, observer.handling_started
    finished, acked = observer.handling_finished, observer.acked
    start = time.process_time()
    for message, hctx in zip(msgs, handlings, strict=True):
        received(message, 1)
        started(None, hctx)  # type: ignore[arg-type]
        finished(None, hctx, None, 0.0)  # type: ignore[arg-type]
        acked(message)
    return (time.process_time() - start) / len(msgs)


class _Memory(Transport):
    """``count`` rows in batches, each with a ``traceparent`` header."""

    system = "redis"
    ack_limit = 100

    def __init__(self, count: int) -> None:
        self.count, self.sent, self.batch = count, 0, Batch()

    def connect(self) -> None:
        pass

    def receive(self, max_messages: int, timeout: float) -> Batch:
        batch = self.batch
        batch.clear()
        end = min(self.count, self.sent + max_messages)
        for i in range(self.sent, end):
            headers = {"headers": {"traceparent": TRACEPARENT}}
            batch.add(b'{"n": 1}', b"1700000000000-%d" % i, headers, i)
        self.sent = end
        batch.ended = end >= self.count
        return batch

    def close(self) -> None:
        pass

    def source(self) -> str:
        return "orders"


class _MemoryAdapter(StdinAdapter[Any]):
    count = 0

    def transport(self) -> Transport:
        return _Memory(self.count)


def loop(make: Callable[[TracerProvider], Observer | None], count: int) -> float:
    """CPU seconds a message through the delivery loop, a handler that decodes and acks."""
    proc: missive.Processor[Any] = missive.Processor()

    @proc.handle_for(lambda m: True)
    def handle(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        message.get_json()
        ctx.ack()

    adapter = _MemoryAdapter(missive.JSONMessage, proc, io.BytesIO(b""))
    adapter.count = count
    spans = provider()
    observer = make(spans)
    if observer is not None:
        adapter.add_observer(observer)
    start = time.process_time()
    adapter.run()
    elapsed = time.process_time() - start
    spans.shutdown()
    return elapsed / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--batch", action="store_true", help="a BatchSpanProcessor")
    args = parser.parse_args()
    BATCHED[0] = args.batch
    n = args.messages
    runs: dict[str, list[float]] = {}
    contenders: dict[str, Callable[[], float]] = {
        "events: bare SDK": lambda: events(Bare(provider()), messages(n, False)),
        "events: missive.tracing, str headers": lambda: events(
            Tracing(provider()), messages(n, False)
        ),
        "events: missive.tracing, bytes fields": lambda: events(
            Tracing(provider()), messages(n, True)
        ),
        "loop: no observer": lambda: loop(lambda p: None, n),
        "loop: bare SDK observer": lambda: loop(Bare, n),
        "loop: missive.tracing": lambda: loop(Tracing, n),
    }
    for _ in range(args.repeat):
        for name, run in contenders.items():
            runs.setdefault(name, []).append(run() * 1e6)
    for name, values in runs.items():
        print(f"{name:40s} {statistics.median(values):6.2f} us/msg")


if __name__ == "__main__":
    main()
