"""The publisher's trace context of a message, read cheaply.

:func:`opentelemetry.propagate.extract` reads every field of the global propagator
through a getter (three Python calls for the default W3C trace context and baggage
propagators) and parses ``traceparent`` with a general pattern: some 3-4 us a
message, a tenth of a consumer span. When the global propagator reads only the W3C
fields (the API's default: trace context and baggage), a message whose
``traceparent`` has the canonical version 00 form and that carries no
``tracestate`` and no ``baggage`` is read here directly, into the same
:class:`~opentelemetry.trace.SpanContext` the propagator would make. Anything else
(another propagator, a ``tracestate`` or ``baggage`` header, a ``traceparent`` in
another form) goes through :func:`~opentelemetry.propagate.extract` as before.

Only the OpenTelemetry API is imported here; :mod:`missive.tracing` imports this
module after checking that the ``otel`` extra is installed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from missive._tracing_carrier import CARRIER_GETTER

__all__ = ["ContextReader"]

#: The fields of the W3C propagators (trace context, baggage): the API's default.
_W3C_FIELDS = (
    frozenset({"traceparent", "tracestate"}),
    frozenset({"traceparent", "tracestate", "baggage"}),
)
#: A ``traceparent`` of version 00 with nothing around it (what publishers send).
_CANONICAL = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_EMPTY = Context()

#: What :meth:`ContextReader.read` returns: the parent context and the remote span's.
Remote = tuple[Context, SpanContext]


def _w3c_only(propagator: TextMapPropagator) -> bool:
    """Whether ``propagator`` reads only the W3C trace context (and baggage) fields."""
    if not isinstance(propagator, CompositePropagator | TraceContextTextMapPropagator):
        return False
    return frozenset(propagator.fields) in _W3C_FIELDS


class ContextReader:
    """Reads the publisher's span context from a message's headers; thread-safe."""

    __slots__ = ("_propagator", "_w3c")

    def __init__(self) -> None:
        self._propagator: TextMapPropagator | None = None
        self._w3c = False

    def read(self, headers: Mapping[Any, Any]) -> Remote | None:
        """The context to parent a span on and its valid remote span context, or
        ``None`` when ``headers`` carry no valid trace context."""
        propagator = propagate.get_global_textmap()
        if propagator is not self._propagator:  # checked again when it is replaced
            self._w3c = _w3c_only(propagator)
            self._propagator = propagator
        if self._w3c:
            value = headers.get("traceparent")
            if value is None:
                value = headers.get(b"traceparent")
                if value is None:  # no span context: nothing for the W3C propagators
                    return None
            if type(value) is bytes:
                value = value.decode("latin-1")
            if type(value) is str and not (
                # what the propagators read besides: their own parsing, as before
                "tracestate" in headers
                or b"tracestate" in headers
                or "baggage" in headers
                or b"baggage" in headers
            ):
                match = _CANONICAL.fullmatch(value)
                if match is not None:
                    trace_id, span_id, flags = match.groups()
                    remote = SpanContext(
                        int(trace_id, 16),
                        int(span_id, 16),
                        is_remote=True,
                        trace_flags=TraceFlags(int(flags, 16)),
                    )
                    if not remote.is_valid:  # an all-zero id
                        return None
                    return trace.set_span_in_context(NonRecordingSpan(remote), _EMPTY), remote
        extracted = propagator.extract(headers, getter=CARRIER_GETTER)
        remote = trace.get_current_span(extracted).get_span_context()
        return (extracted, remote) if remote.is_valid else None
