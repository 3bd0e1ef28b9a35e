"""What the tracing observer reads from a message (the trace context, safe labels) and
keeps for it while its span is open.

Only the OpenTelemetry API is imported here; :mod:`missive.tracing` imports this
module after checking that the ``otel`` extra is installed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry.propagators.textmap import Getter

from missive.reason import DeadLetterReason

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from missive.message import Message

__all__ = [
    "CARRIER_GETTER",
    "Delivery",
    "carrier",
    "exception_attributes",
    "fixed_attributes",
    "message_id_text",
]

#: The attributes a trace context may travel in: AMQP, NATS, MQTT and HTTP headers,
#: then the other fields of a Redis Streams entry.
_CARRIER_KEYS = ("headers", "fields")
#: The deepest stack recorded for an exception.
_MAX_FRAMES = 32


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    return None


class _MappingGetter(Getter[Mapping[Any, Any]]):
    """Reads a header from a dict whose keys and values are ``str`` or ``bytes``."""

    def get(self, carrier: Mapping[Any, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            value = carrier.get(key.encode("latin-1"))
            if value is None:
                return None
        if isinstance(value, list | tuple):
            texts = [text for text in map(_text, value) if text is not None]
            return texts or None
        text = _text(value)
        return None if text is None else [text]

    def keys(self, carrier: Mapping[Any, Any]) -> list[str]:
        return [text for text in map(_text, carrier) if text is not None]


#: The getter :func:`opentelemetry.propagate.extract` reads a message's headers with.
CARRIER_GETTER = _MappingGetter()


def carrier(attributes: Mapping[str, Any]) -> Mapping[Any, Any] | None:
    """The headers (or stream fields) of a message that may hold a ``traceparent``."""
    for key in _CARRIER_KEYS:
        value = attributes.get(key)
        if isinstance(value, Mapping) and value:
            return value
    return None


def fixed_attributes(system: str | None, source: str) -> dict[str, Any]:
    """The attributes every span of ``source`` on ``system`` starts with."""
    return {
        "messaging.system": system,
        "messaging.destination.name": source,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.operation": "process",  # the name before semconv 1.26
    }


def message_id_text(message_id: bytes | str | None) -> str | None:
    """A message id as span attribute text."""
    if message_id is None:
        return None
    if isinstance(message_id, bytes):
        return message_id.decode("utf-8", "replace")
    return str(message_id)


def _frames(tb: TracebackType | None) -> str:
    """The stack of ``tb``, file, line and function only: no source line, no locals,
    and never the exception's text (which may quote the payload)."""
    lines = ["Traceback (most recent call last):"]
    count = 0
    while tb is not None and count < _MAX_FRAMES:
        code = tb.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}')
        tb, count = tb.tb_next, count + 1
    return "\n".join(lines)


def exception_attributes(failure: DeadLetterReason) -> dict[str, str]:
    """The attributes of an ``exception`` span event for ``failure``, without its text.

    ``exception.message`` is the reason's summary (what Missive logs: the exception's
    type and where it was raised, never its text); the stack has no source lines.
    """
    attributes = {
        "exception.type": failure.exc_type or "missive.HandlingFailed",
        "exception.message": failure.summary,
    }
    exception = failure.exception
    if exception is not None and exception.__traceback__ is not None:
        attributes["exception.stacktrace"] = _frames(exception.__traceback__)
    return attributes


class Delivery:
    """One message's span from its arrival to its settlement."""

    __slots__ = ("attempts", "dead", "dlq_failed", "failure", "handler", "message", "span", "token")

    def __init__(self, message: Message, span: Span) -> None:
        self.message = message  # kept so that id(message) is not reused while open
        self.span = span
        self.token: contextvars.Token[otel_context.Context] | None = None
        self.attempts = 0
        self.handler: str | None = None
        self.failure: DeadLetterReason | None = None
        self.dead = False
        self.dlq_failed = False
