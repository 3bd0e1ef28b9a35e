"""What the WSGI adapter answers: status lines, small JSON documents, and the log of each
answer that is not a success (a refused request, a message neither handled nor stored).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from missive.adapters._wsgi_request import RejectedError
from missive.errors import DLQWriteError, HandlingError
from missive.message import Message

__all__ = [
    "STATUS",
    "StartResponse",
    "failed",
    "log_bug",
    "log_failure",
    "refused",
    "respond",
    "respond_outcome",
    "unavailable",
]

# The adapter's logger: these lines are the adapter's own.
logger = logging.getLogger("missive.adapters.wsgi")

StartResponse = Callable[..., Any]

STATUS = {
    200: "200 OK",
    202: "202 Accepted",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    408: "408 Request Timeout",
    411: "411 Length Required",
    413: "413 Content Too Large",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}

_encode = json.JSONEncoder(separators=(",", ":")).encode
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii


def respond(
    start_response: StartResponse,
    status: int,
    document: Mapping[str, Any],
    headers: Iterable[tuple[str, str]] = (),
    head: bool = False,
) -> list[bytes]:
    """Start a JSON response; returns the WSGI body (empty for a HEAD request)."""
    body = _encode(document).encode("utf-8")
    start_response(
        STATUS[status],
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *headers,
        ],
    )
    return [] if head else [body]


def respond_outcome(
    start_response: StartResponse,
    status: int,
    outcome: str,
    message_id: bytes,
    headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    """Start ``{"status": outcome, "message_id": ...}``: the common case, made cheap."""
    body = b'{"status":"%s","message_id":%s}' % (
        outcome.encode("ascii"),
        _quote(message_id.decode("latin-1")).encode("ascii"),
    )
    start_response(
        STATUS[status],
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers],
    )
    return [body]


def refused(start_response: StartResponse, path: str, rejected: RejectedError) -> list[bytes]:
    """Log a request refused before it became a message, and answer its status."""
    logger.warning(
        "POST %s refused with %d, not processed: %s",
        path,
        rejected.status,
        rejected.reason,
    )
    return respond(start_response, rejected.status, rejected.document, rejected.headers)


def failed(start_response: StartResponse, message: Message) -> list[bytes]:
    """Answer 500: ``message`` was neither handled nor stored (logged by the caller)."""
    document = {
        "status": "failed",
        "message_id": message.message_id.decode("latin-1"),
        "error": "the message was not handled and not stored; retry later",
    }
    return respond(start_response, 500, document)


def unavailable(
    start_response: StartResponse,
    retry_after: int,
    headers: Iterable[tuple[str, str]],
    head: bool = False,
) -> list[bytes]:
    """Answer 503 with ``Retry-After``: the adapter takes no messages now."""
    document = {"status": "unavailable", "retry_after": retry_after}
    return respond(start_response, 503, document, headers, head=head)


def log_failure(message: Message, exc: HandlingError | DLQWriteError) -> None:
    """Log why ``message`` gets a 500: not handled, and no DLQ or the DLQ write failed."""
    reason = exc.reason
    summary = getattr(reason, "summary", reason)
    if isinstance(exc, DLQWriteError):
        cause = exc.__cause__
        what = f"writing it to the DLQ failed ({type(cause).__name__}: {cause})"
        advice = "Check the DLQ's storage"
    else:
        what = "no DLQ is set"
        advice = "Fix the cause, or set a DLQ to store such messages"
    logger.error(
        "message %r (%d bytes) could not be handled (%s) and %s: answered 500, it is "
        "neither acked nor stored, the sender should retry. %s.",
        message.message_id,
        len(message.raw_data),
        summary,
        what,
        advice,
        extra={"message_id": message.message_id, "outcome": "failed"},
    )
    # The full reason may quote the payload (exception text): debug level only.
    logger.debug("message %r full reason: %s", message.message_id, reason)
    traceback = getattr(reason, "traceback", None)
    if traceback:
        logger.debug("message %r traceback:\n%s", message.message_id, traceback)


def log_bug(message: Message, exc: Exception) -> None:
    """Log an error processing raised that it should not (a bug): it gets a 500."""
    logger.error(
        "message %r (%d bytes): processing raised %s; answered 500 so that the "
        "sender retries. This is a bug in Missive or a message class: report it.",
        message.message_id,
        len(message.raw_data),
        type(exc).__qualname__,
    )
    logger.debug("the error for message %r", message.message_id, exc_info=True)
