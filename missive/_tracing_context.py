"""The publisher's trace context of a message, read through the global propagator.

Only the OpenTelemetry API is imported here; :mod:`missive.tracing` imports this
module after checking that the ``otel`` extra is installed. The W3C header is parsed
by the propagator itself (``propagate.extract``), never by hand: what it accepts and
refuses is the specification's, kept by OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext

from missive._tracing_carrier import CARRIER_GETTER

__all__ = ["ContextReader"]

#: What :meth:`ContextReader.read` returns: the parent context and the remote span's.
Remote = tuple[Context, SpanContext]


class ContextReader:
    """Reads the publisher's span context from a message's headers; thread-safe."""

    __slots__ = ()

    def read(self, headers: Mapping[Any, Any]) -> Remote | None:
        """The context to parent a span on and its valid remote span context, or
        ``None`` when ``headers`` carry no valid trace context."""
        extracted = propagate.extract(headers, getter=CARRIER_GETTER)
        remote = trace.get_current_span(extracted).get_span_context()
        return (extracted, remote) if remote.is_valid else None
