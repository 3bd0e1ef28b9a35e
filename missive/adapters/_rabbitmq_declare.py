"""Declaring the queues a RabbitMQAdapter consumes, when it is asked to (``declare=True``).

Only imported once :mod:`missive.adapters.rabbitmq` found pika.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from missive.errors import MissiveError

__all__ = ["QueueDeclarationError", "declarer"]

# The broker's reply when a queue exists with other settings than those declared.
_PRECONDITION_FAILED = 406


class QueueDeclarationError(MissiveError):
    """A queue exists with other settings (durability, type, arguments) than declared."""


def declarer(
    queues: Sequence[str], arguments: Mapping[str, Any] | None
) -> Callable[[BlockingChannel], None]:
    """A function that declares ``queues`` on a channel: durable, not exclusive, kept
    when unused (a classic queue unless ``arguments`` say otherwise, such as
    ``{"x-queue-type": "quorum"}``). Declaring a queue that exists with the same
    settings changes nothing, so it runs at every connection.

    :raises QueueDeclarationError: from the function, if a queue exists with other
        settings; the adapter stops, since reconnecting cannot fix it.
    """
    given = dict(arguments) if arguments else None

    def declare(channel: BlockingChannel) -> None:
        for queue in queues:
            try:
                channel.queue_declare(queue, durable=True, arguments=given)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != _PRECONDITION_FAILED:
                    raise
                raise QueueDeclarationError(
                    f"cannot declare the RabbitMQ queue {queue!r}: it exists with other "
                    f"settings ({exc.reply_code} {exc.reply_text}); declare it as it is "
                    "(declare_arguments=...), or delete it, or drop declare=True"
                ) from exc

    return declare
