"""What a RabbitMQ delivery becomes: a row of the transport's Batch, made by the
consumer callback, and the key a redelivery without a publisher id is counted under.

Only the RabbitMQ transport uses this module, once :mod:`missive.adapters.rabbitmq`
found pika.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from missive.adapters._rabbitmq_copies import copy_row
from missive.adapters._rabbitmq_delays import Delays
from missive.attempts import RETRIES
from missive.runtime.transport import Batch

__all__ = ["content_key", "row_maker"]


def row_maker(
    batch: Batch, queue: str, delays: Delays
) -> Callable[[BlockingChannel, Basic.Deliver, BasicProperties, bytes], None]:
    """The consumer callback for ``queue``, adding one row to ``batch`` per delivery:
    the per-message hot path."""
    add_body, add_id, add_count = batch.bodies.append, batch.ids.append, batch.counts.append
    add_attributes, add_handle = batch.attributes.append, batch.handles.append
    keep = delays.keep if delays.on else None

    def on_message(
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        # No settling here: a reject or an ack is sent at once, and pika reads while
        # it sends, so what it frees could join this dispatch, forever.
        headers = properties.headers
        tag: int = method.delivery_tag  # type: ignore[assignment]  # set on a delivery
        if keep is not None:  # for a delayed retry's copy
            keep(tag, properties)
        publisher_id = properties.message_id
        redelivered = method.redelivered
        count: int | None = None if redelivered else 1
        if headers:
            if RETRIES in headers:  # a copy back from a delay queue
                row_id = publisher_id.encode() if publisher_id else None
                attributes, count, retried = copy_row(queue, method, properties, headers)
                batch.add(body, row_id, attributes, tag, count, retried=retried)
                return
            previous = headers.get("x-delivery-count")
            if isinstance(previous, int):  # quorum queues count earlier deliveries
                count = previous + 1
        add_body(body)
        add_id(publisher_id.encode() if publisher_id else None)
        add_attributes(
            {
                "queue": queue,
                "exchange": method.exchange,
                "routing_key": method.routing_key,
                "redelivered": redelivered,
                "delivery_count": count,
                "headers": headers if headers else {},
                "publisher_id": bool(publisher_id),
                "content_type": properties.content_type,
                "correlation_id": properties.correlation_id,
                "reply_to": properties.reply_to,
                "content_encoding": properties.content_encoding,
                "priority": properties.priority,
                "timestamp": properties.timestamp,
                "type": properties.type,
                "app_id": properties.app_id,
            }
        )
        add_count(count)
        add_handle(tag)

    return on_message


def content_key(queue: str, routing_key: str | None, body: bytes) -> bytes:
    """A stable key for a message without a publisher id: identical messages share it."""
    digest = hashlib.sha256(f"{queue}\0{routing_key}\0".encode())
    digest.update(body)
    return b"amqp-content:" + digest.hexdigest().encode()
