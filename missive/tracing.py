"""Tracing: one OpenTelemetry consumer span per message (the ``missive[otel]`` extra).

Only the OpenTelemetry API is used: the SDK, its span processors and exporters are
the application's. Register with :func:`instrument` (or ``add_observer(Tracing())``)::

    from missive.tracing import instrument
    instrument(adapter)        # the global tracer provider, or tracer_provider=...

Each message gets a span of kind CONSUMER named ``process <destination>``, with the
messaging attributes of the OpenTelemetry semantic conventions. Its parent (or,
with ``parent=False``, a link) is the context the publisher put in the ``traceparent`` /
``tracestate`` headers (AMQP, NATS and MQTT headers, HTTP headers, a Redis Streams
field). The span is current while the hooks and the handler run, and ends once the
message is settled; see ``docs/tracing.md``. No payload and no header value other
than the trace context ever goes into a span.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from missive.errors import MissingExtraError
from missive.events import Observer

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
except ImportError as _exc:  # pragma: no cover - depends on what is installed
    raise MissingExtraError("otel", "missive.tracing") from _exc

from opentelemetry.trace import (
    Link,
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanKind,
    Status,
    StatusCode,
)

from missive._tracing_carrier import (
    Delivery,
    carrier,
    exception_attributes,
    fixed_attributes,
    message_id_text,
)
from missive._tracing_context import ContextReader

if TYPE_CHECKING:
    from missive.context import HandlingContext, Outcome, ProcessingContext
    from missive.errors import MissiveError
    from missive.message import Message
    from missive.reason import DeadLetterReason

__all__ = ["Tracing", "instrument"]

#: Spans left open (received, never settled: a connection lost with them in flight)
#: beyond this many are ended, the oldest first, as ``unsettled``.
MAX_OPEN = 10_000
_FAILED_OUTCOMES = frozenset({"dead_lettered", "retried", "failed", "lost", "unsettled"})
#: The parent of a span that starts a new trace (``parent=False``): no span, no baggage.
_ROOT = otel_context.Context()


class Tracing(Observer):
    """An observer that traces each message as an OpenTelemetry consumer span.

    Thread-safe: the delivery loop, worker threads, an event loop and a WSGI
    server's threads may all call it. While the tracer provider is the API's default
    (no SDK configured), each event costs one check.

    :param tracer_provider: where spans go; ``None``: the global provider, looked up
        until one is set.
    :param parent: make the publisher's context the span's parent (one trace from
        the publisher to the handler's own spans); ``False`` starts a new trace
        with a link to it.
    """

    def __init__(
        self, tracer_provider: trace.TracerProvider | None = None, *, parent: bool = True
    ) -> None:
        self._provider = tracer_provider
        self._tracer: trace.Tracer | None = None
        self._parent = parent
        self._open: dict[int, Delivery] = {}
        self._system: str | None = None
        self._source: str | None = None
        # The span name and first attributes, once the source is known (not over WSGI).
        self._name: str | None = None
        self._attributes: dict[str, Any] = {}
        self._reader = ContextReader()

    def _tracer_now(self) -> trace.Tracer | None:
        """The tracer, or ``None`` while no real tracer provider is set."""
        tracer = self._tracer
        if tracer is None:
            provider = self._provider or trace.get_tracer_provider()
            if isinstance(provider, ProxyTracerProvider | NoOpTracerProvider):
                return None
            from missive import __version__

            tracer = self._tracer = provider.get_tracer("missive", __version__)
        return tracer

    def worker_started(self, adapter: Any) -> None:
        """Learn the adapter's messaging system and destination, for every span."""
        transport = getattr(adapter, "running_transport", None)
        if transport is None:  # a push adapter (WSGI): the request path, per message
            self._system, self._source = "http", None
        else:
            self._system = getattr(transport, "system", "unknown")
            source = getattr(transport, "source", None)
            self._source = source() if source is not None else transport.where()
        if self._source is None:
            self._name = None
        else:
            self._attributes = fixed_attributes(self._system, self._source)
            self._name = f"process {self._source}"

    def worker_stopping(self, adapter: Any) -> None:
        """End every span still open: nothing will settle those messages now."""
        for key in list(self._open):
            self._end(key, "unsettled")

    def message_received(self, message: Message, delivery_count: int | None) -> None:
        """Start the message's span, its parent the publisher's context if it sent one."""
        tracer = self._tracer or self._tracer_now()
        if tracer is None:
            return
        attributes = message.attributes
        name, span_attributes = self._name, self._attributes
        if name is None:  # no source known (WSGI: the request path, per message)
            name, span_attributes = self._labels(attributes)
        span_attributes = span_attributes.copy()
        message_id = message_id_text(message.message_id)
        if message_id is not None:
            span_attributes["messaging.message.id"] = message_id
        if delivery_count is not None and delivery_count != 1:  # a redelivery or a retry
            span_attributes["missive.delivery_count"] = delivery_count
        parent: otel_context.Context | None = None
        links: tuple[Link, ...] = ()
        headers = attributes.get("headers") or attributes.get("fields")
        if headers is None or type(headers) is not dict:
            headers = carrier(attributes)
        if headers:
            remote = self._reader.read(headers)
            if remote is not None:
                if self._parent:
                    parent = remote[0]
                else:  # a new trace (an empty context, not the current one), linked
                    parent = _ROOT
                    links = (Link(remote[1]),)
        span = tracer.start_span(
            name, context=parent, kind=SpanKind.CONSUMER, attributes=span_attributes, links=links
        )
        open_ = self._open
        open_[id(message)] = Delivery(message, span)
        if len(open_) > MAX_OPEN:
            # StopIteration, RuntimeError: emptied or changed by another thread.
            with contextlib.suppress(StopIteration, RuntimeError):
                self._end(next(iter(open_)), "unsettled")

    def _labels(self, attributes: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The span name and fixed attributes of a message whose source is its own."""
        system, source = self._system, self._source
        if source is None:
            path = attributes.get("path")
            source = path if isinstance(path, str) else "unknown"
            system = system or ("http" if path is not None else "unknown")
        return f"process {source}", fixed_attributes(system, source)

    def handling_started(self, pctx: ProcessingContext[Any], hctx: HandlingContext[Any]) -> None:
        """Make the span current for the hooks and the handler (on this thread or task)."""
        delivery = self._open.get(id(hctx.message))
        if delivery is None:
            return
        if delivery.attempts:
            delivery.span.add_event(
                "missive.retry",
                {"missive.retry.delay": 0.0, "missive.attempt": delivery.attempts + 1},
            )
        delivery.attempts += 1
        delivery.token = otel_context.attach(trace.set_span_in_context(delivery.span))

    def handling_finished(
        self,
        pctx: ProcessingContext[Any],
        hctx: HandlingContext[Any],
        outcome: Outcome | None,
        duration: float,
    ) -> None:
        """Restore the context from before; record a failed attempt's exception."""
        delivery = self._open.get(id(hctx.message))
        if delivery is None:
            return
        token, delivery.token = delivery.token, None
        if token is not None:
            otel_context.detach(token)
        delivery.handler = hctx.handler_name
        failure = hctx.failure if outcome is None else None
        if failure is not None:
            delivery.failure = failure
            delivery.span.add_event("exception", exception_attributes(failure))

    def acked(self, message: Message) -> None:
        """End the span: handled, or stored in the DLQ."""
        delivery = self._open.pop(id(message), None)
        if delivery is not None:  # else: not traced, or ended by another thread
            self._close(delivery, "dead_lettered" if delivery.dead else "acked")

    def requeued(self, message: Message, delay: float) -> None:
        """End the span: given back to the transport (a nack, or a failure not stored)."""
        delivery = self._open.get(id(message))
        if delivery is not None:
            delivery.span.add_event("missive.requeue", {"missive.requeue.delay": delay})
            self._end(id(message), "failed" if delivery.dlq_failed else "nacked")

    def retried(self, message: Message, delay: float) -> None:
        """End the span with a ``missive.retry`` event: retried ``delay`` s later."""
        delivery = self._open.get(id(message))
        if delivery is not None:
            delivery.span.add_event("missive.retry", {"missive.retry.delay": delay})
            self._end(id(message), "retried")

    def dead_lettered(self, message: Message, reason: DeadLetterReason) -> None:
        """Add a ``missive.dead_letter`` event; the span ends when the message is acked."""
        delivery = self._find(message)
        if delivery is not None:
            delivery.dead = True
            delivery.failure = delivery.failure or reason
            delivery.span.add_event("missive.dead_letter", {"missive.reason": reason.summary})

    def dlq_write_failed(
        self, message: Message, reason: DeadLetterReason, error: BaseException | None
    ) -> None:
        """Add a ``missive.dlq_write_failed`` event (with the error's type, not its text)."""
        delivery = self._find(message)
        if delivery is not None:
            delivery.dlq_failed = True
            delivery.failure = delivery.failure or reason
            error_type = "no DLQ" if error is None else type(error).__qualname__
            delivery.span.add_event(
                "missive.dlq_write_failed",
                {"missive.reason": reason.summary, "exception.type": error_type},
            )

    def lost(self, message: Message, error: MissiveError) -> None:
        """End the span: the message was neither handled nor stored, and is gone."""
        if id(message) in self._open:
            self._end(id(message), "lost")

    def _find(self, message: Message) -> Delivery | None:
        """The open delivery of ``message``, or of the message it is a copy of (a dead
        letter carries its attempt history in a copy: same class, bytes and id)."""
        delivery = self._open.get(id(message))
        if delivery is not None:
            return delivery
        for candidate in list(self._open.values()):
            other = candidate.message
            if other.message_id == message.message_id and other.raw_data is message.raw_data:
                return candidate
        return None

    def _end(self, key: int, outcome: str) -> None:
        delivery = self._open.pop(key, None)
        if delivery is not None:  # else: another thread ended it
            self._close(delivery, outcome)

    @staticmethod
    def _close(delivery: Delivery, outcome: str) -> None:
        """Set the span's outcome (and its status on a failure) and end it."""
        span = delivery.span
        handler = delivery.handler
        if handler is None:
            span.set_attribute("missive.outcome", outcome)
        else:
            span.set_attributes({"missive.outcome": outcome, "missive.handler": handler})
        if outcome in _FAILED_OUTCOMES:
            failure = delivery.failure
            description = failure.summary if failure is not None else outcome
            span.set_status(Status(StatusCode.ERROR, description))
        span.end()


def instrument(
    target: Any, tracer_provider: trace.TracerProvider | None = None, *, parent: bool = True
) -> Tracing:
    """Trace every message of ``target`` (an adapter or a processor); returns the observer.

    :param target: anything with ``add_observer``: an :class:`~missive.Adapter` or a
        :class:`~missive.Processor`.
    :param tracer_provider: where spans go; ``None``: OpenTelemetry's global provider.
    :param parent: see :class:`Tracing`.
    """
    tracing = Tracing(tracer_provider, parent=parent)
    target.add_observer(tracing)
    return tracing
