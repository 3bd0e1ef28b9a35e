"""Structured logs: :class:`JSONFormatter` (one JSON object a line) and :class:`MessageLog`.

``missive run --log-format json`` installs the formatter; in code::

    handler = logging.StreamHandler()
    handler.setFormatter(missive.logs.JSONFormatter())
    logging.getLogger().addHandler(handler)

Missive's log lines about a message pass ``message_id``, ``handler`` and ``outcome``
as ``extra``; the formatter writes them as fields. Nothing here imports an extra:
the trace and span ids are added only where OpenTelemetry is installed.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from missive.events import Observer

if TYPE_CHECKING:
    from missive.context import HandlingContext, Outcome, ProcessingContext
    from missive.message import Message

try:
    from opentelemetry import trace as _trace
except ImportError:  # the otel extra is optional: no trace ids then
    _trace = None  # type: ignore[assignment]

__all__ = ["FIELDS", "JSONFormatter", "MessageLog"]

#: The ``extra`` names written as fields when a record has them, in this order.
FIELDS = ("message_id", "handler", "outcome", "duration", "adapter", "source")
#: The deepest stack written for an exception.
_MAX_FRAMES = 32


def _stack(tb: TracebackType | None) -> list[str]:
    """The frames of ``tb`` (file, line, function): no source, no exception text."""
    frames: list[str] = []
    while tb is not None and len(frames) < _MAX_FRAMES:
        code = tb.tb_frame.f_code
        frames.append(f"{code.co_filename}:{tb.tb_lineno} in {code.co_name}")
        tb = tb.tb_next
    return frames


def _value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    name = getattr(value, "value", None)  # an enum such as Outcome
    return name.replace("-", "_") if isinstance(name, str) else str(value)


class JSONFormatter(logging.Formatter):
    """Formats each record as one line of JSON.

    Fields: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, ``pid``;
    then those of :data:`FIELDS` the record carries (as ``extra``); ``trace_id`` and
    ``span_id`` when an OpenTelemetry span is current; ``exception`` (the type and the
    stack's frames) when the record has one.

    An exception's text is left out unless ``exception_text=True``: it may quote
    the payload (``ValueError: bad order {...}``), which no log line may hold.

    :param exception_text: write the exception's message and formatted traceback too.
    """

    def __init__(self, *, exception_text: bool = False) -> None:
        super().__init__()
        self.exception_text = exception_text

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object, without a newline."""
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process if record.process is not None else os.getpid(),
        }
        fields = record.__dict__
        for name in FIELDS:
            value = fields.get(name)
            if value is not None:
                document[name] = _value(value)
        if _trace is not None:
            context = _trace.get_current_span().get_span_context()
            if context.is_valid:
                document["trace_id"] = _trace.format_trace_id(context.trace_id)
                document["span_id"] = _trace.format_span_id(context.span_id)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            exception: dict[str, Any] = {
                "type": type(exc).__qualname__,
                "stack": _stack(exc.__traceback__),
            }
            if self.exception_text:
                exception["message"] = str(exc)
                exception["traceback"] = self.formatException(record.exc_info)
            document["exception"] = exception
        return json.dumps(document, ensure_ascii=False, default=str)


class MessageLog(Observer):
    """An observer that logs one INFO line per handled message (opt-in).

    Logger ``missive.messages``; fields ``message_id``, ``handler``, ``outcome``
    (``acked``, ``nacked``, ``failed`` for an attempt that failed; then ``retried``
    on its own line), ``duration`` (seconds) and ``adapter``. Off by default: at
    thousands of messages a second a line each costs more than the handling, and
    metrics and traces count them. Dead letters are logged at WARNING without it.

    :param logger: where the lines go (default ``missive.messages``).
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("missive.messages")
        self._adapter: str | None = None

    def worker_started(self, adapter: Any) -> None:
        """Learn the adapter's messaging system ("rabbitmq", "redis", "http"...)."""
        transport = getattr(adapter, "running_transport", None)
        system = getattr(transport, "system", None)
        self._adapter = system if isinstance(system, str) else type(adapter).__name__

    def handling_finished(
        self,
        pctx: ProcessingContext[Any],
        hctx: HandlingContext[Any],
        outcome: Outcome | None,
        duration: float,
    ) -> None:
        """One line: the message's id, its handler, what it decided, how long it took."""
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        message = hctx.message
        failure = hctx.failure
        extra = {
            "message_id": message.message_id,
            "handler": hctx.handler_name,
            "outcome": "failed" if outcome is None else _value(outcome),
            "duration": round(duration, 6),
            "adapter": self._adapter,
        }
        if outcome is None and failure is not None:
            # The summary, never the exception's text (it may quote the payload).
            logger.info("message %r failed: %s", message.message_id, failure.summary, extra=extra)
        else:
            logger.info("message %r %s", message.message_id, extra["outcome"], extra=extra)

    def retried(self, message: Message, delay: float) -> None:
        """One line: the message will be handled again ``delay`` s later."""
        extra = {"message_id": message.message_id, "outcome": "retried", "adapter": self._adapter}
        self.logger.info("message %r retried in %.3g s", message.message_id, delay, extra=extra)
