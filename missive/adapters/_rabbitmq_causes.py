"""Why a RabbitMQ connection failed, in words: for the reconnection line, and for the notes
of the errors that stop the adapter."""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

__all__ = ["consume_refused", "describe", "login_refused"]

# pika errors that keep their cause only as text (a repr), by class name.
_BY_NAME = {
    "IncompatibleProtocolError": "closed during the AMQP handshake",
    "StreamLostError": "connection lost",
    "AMQPHeartbeatTimeout": "no heartbeat from the broker",
    "AMQPConnectorStackTimeout": "timed out",
}


def login_refused(exc: BaseException, where: str) -> str:
    """The note on an error for a login RabbitMQ refused: what to check."""
    return (
        f"RabbitMQ at {where} refused the login ({describe(exc)}): "
        "check the user, password and vhost in the URL, then start again"
    )


def consume_refused(exc: BaseException, where: str, queues: Sequence[str]) -> str:
    """The note on a channel closed with 403 or 404 when consuming ``queues``."""
    return (
        f"RabbitMQ at {where} would not let us consume {', '.join(queues)} "
        f"({describe(exc)}): declare the queues and grant the user read access, then "
        "start again"
    )


def describe(exc: BaseException) -> str:
    """The cause of a failed connection or channel, never empty.

    pika's connection errors often have an empty text and wrap the real cause: a
    socket error in an attempt (``.exception``), every attempt (``.exceptions``) or
    their ``args``. This follows them down to the socket error or the broker's reply.
    Nothing here holds a message payload: connection errors carry none. Duck-typed so
    that only :mod:`missive.adapters.rabbitmq` imports pika.
    """
    reply_code = getattr(exc, "reply_code", None)
    if reply_code is not None:  # ConnectionClosedByBroker, ChannelClosedByBroker
        return f"closed by the broker: {reply_code} {getattr(exc, 'reply_text', '')}".strip()
    attempts = getattr(exc, "exceptions", None)
    if attempts:
        return describe(attempts[-1])
    for wrapped in (getattr(exc, "exception", None), *exc.args[:1], exc.__cause__):
        if isinstance(wrapped, BaseException):
            return describe(wrapped)
    if isinstance(exc, ValueError) and isinstance(exc.__context__, OSError):
        # pika's "Expected connected socket": the socket it was handed had gone
        return describe(exc.__context__)
    name = _BY_NAME.get(type(exc).__name__)
    if name is not None:
        return f"{name} (connection reset)" if "ConnectionResetError" in str(exc) else name
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError) or (
        isinstance(exc, OSError) and exc.errno == errno.ENOTCONN
    ):
        return "connection reset"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__
