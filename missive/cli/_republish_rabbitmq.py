"""Publishing dead letters back to RabbitMQ, each confirmed (``replay --to-broker``).

One BlockingChannel in confirm mode: ``basic_publish`` returns once RabbitMQ acked
the message, and raises if it nacked it or, published ``mandatory``, returned it as
unroutable. A letter goes to the exchange and routing key it was published with,
or, when that was the default exchange (``""``), straight to its queue. It keeps
its bytes, headers (less the broker's ``x-delivery-count``) and the properties its
adapter stored (content type, correlation id, reply-to, the publisher's message
id), is persistent, and carries ``x-missive-replays``.

Imported only by a replay to an ``amqp://`` URL; pika is imported here, so a
missing extra is reported then.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from missive.cli._common import CLIError, redact
from missive.cli._replay_loop import RefusedError
from missive.cli._republish import REPLAYS, original_id
from missive.dlq import DeadLetter
from missive.errors import MissingExtraError

try:
    import pika
    import pika.exceptions
except ImportError as _exc:
    raise MissingExtraError("rabbitmq", "missive dlq replay --to-broker amqp://") from _exc

__all__ = ["RabbitMQPublisher", "connect"]

# Properties a RabbitMQ adapter may store among the attributes, kept as they were.
_PROPERTIES = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "reply_to",
    "priority",
    "expiration",
    "timestamp",
    "type",
    "app_id",
)
# Set by the broker on delivery, never by a publisher.
_BROKER_HEADERS = frozenset({"x-delivery-count"})


def connect(url: str, args: argparse.Namespace) -> RabbitMQPublisher:
    """A publisher on the broker at ``url``.

    :raises CLIError: if it cannot connect.
    """
    return RabbitMQPublisher(url)


class RabbitMQPublisher:
    """Publishes to one RabbitMQ broker with publisher confirms.

    :raises CLIError: if the broker cannot be reached or refuses the login.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.connection = pika.BlockingConnection(pika.URLParameters(url))
            self.channel = self._open_channel()
        except (pika.exceptions.AMQPError, OSError, ValueError) as exc:
            raise CLIError(
                f"cannot connect to RabbitMQ at {redact(url)!r} ({type(exc).__name__}); "
                "nothing sent"
            ) from None

    def _open_channel(self) -> Any:
        channel = self.connection.channel()
        channel.confirm_delivery()
        return channel

    def publish(self, record: DeadLetter, replays: int) -> None:
        """Publish ``record`` where it came from; return once RabbitMQ confirmed it."""
        attributes = record.attributes
        exchange = attributes.get("exchange") or ""
        routing_key = (attributes.get("routing_key") or "") if exchange else attributes["queue"]
        try:
            self.channel.basic_publish(
                exchange,
                routing_key,
                record.message.raw_data,
                properties(record, replays),
                mandatory=True,
            )
        except pika.exceptions.UnroutableError:
            raise RefusedError(
                f"unroutable: RabbitMQ found no queue for exchange {exchange!r}, "
                f"routing key {routing_key!r}"
            ) from None
        except pika.exceptions.NackError:
            raise RefusedError("RabbitMQ refused it (nack)") from None
        except pika.exceptions.ChannelClosedByBroker as exc:
            self._reopen()
            raise RefusedError(f"RabbitMQ refused it: {exc.reply_code} {exc.reply_text}") from None
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.ChannelClosed, OSError):
            raise CLIError(
                f"lost the connection to RabbitMQ at {redact(self.url)!r}; the letters "
                "confirmed so far are removed: run the same command again for the others"
            ) from None

    def _reopen(self) -> None:
        try:
            self.channel = self._open_channel()
        except (pika.exceptions.AMQPError, OSError):
            raise CLIError(
                f"RabbitMQ at {redact(self.url)!r} closed the channel and no other opens"
            ) from None

    def close(self) -> None:
        """Close the connection (quietly: it may be gone)."""
        try:
            if self.connection.is_open:
                self.connection.close()
        except (pika.exceptions.AMQPError, OSError):
            pass


def properties(record: DeadLetter, replays: int) -> Any:
    """The letter's properties: those stored, persistent, its replay count in the headers."""
    attributes = record.attributes
    stored = attributes.get("headers")
    headers = {
        name: value
        for name, value in (stored.items() if isinstance(stored, Mapping) else ())
        if name not in _BROKER_HEADERS
    }
    headers[REPLAYS] = replays
    kept = {name: attributes[name] for name in _PROPERTIES if attributes.get(name) is not None}
    if attributes.get("publisher_id"):
        kept["message_id"] = original_id(record).decode("utf-8", "replace")
    return pika.BasicProperties(headers=headers, delivery_mode=pika.DeliveryMode.Persistent, **kept)
