"""The acks RabbitMQAdapter owes on one channel, sent together as one multiple ack."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only missive.adapters.rabbitmq imports pika, so that it can say
    from pika.adapters.blocking_connection import BlockingChannel  # which extra is missing

__all__ = ["Acks"]


class Acks:
    """Acks owed on one channel, coalesced into ``basic_ack(tag, multiple=True)``.

    The adapter settles deliveries one at a time, in delivery-tag order, so once
    delivery ``tag`` is settled every earlier delivery on the channel is settled too,
    except one waiting for a delayed requeue. An ack is only ever *sent later*, never
    earlier than the handler's outcome: :meth:`ack` records the tag, and one multiple
    ack goes out when ``limit`` are owed, when every message pika has received so far
    is handled (a zero-delay timer fires then), before a delayed requeue, and at
    shutdown (:meth:`flush`). While a delayed requeue is pending, acks are sent one by
    one, since a multiple ack would also ack the message waiting to be requeued.

    If the connection drops, the owed acks are lost and RabbitMQ delivers those
    messages again: at most ``limit`` more duplicates, never a lost message. Nothing
    is kept per message: a tag and two counters.
    """

    __slots__ = ("_channel", "_last", "_limit", "_owed", "_requeues", "_scheduled")

    def __init__(self, channel: BlockingChannel, limit: int) -> None:
        self._channel = channel
        self._limit = max(1, limit)
        self._last = 0
        self._owed = 0
        self._requeues = 0
        self._scheduled = False

    @property
    def owed(self) -> int:
        """How many handled messages are not acked on the broker yet."""
        return self._owed

    def ack(self, tag: int) -> None:
        """Ack delivery ``tag`` (now, or with the next multiple ack)."""
        if self._requeues:
            self._owed += 1  # counted as owed until the broker has it
            self._channel.basic_ack(tag)
            self._owed -= 1
            return
        self._last = tag
        self._owed += 1
        if self._owed >= self._limit:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._channel.connection.call_later(0, self._on_idle)

    def flush(self) -> None:
        """Send the owed acks now, as one multiple ack."""
        if self._owed:
            self._channel.basic_ack(self._last, multiple=True)
            self._owed = 0

    def requeue_later(self, tag: int, delay: float) -> None:
        """Nack delivery ``tag`` with requeue after ``delay`` seconds."""
        self.flush()
        self._requeues += 1
        channel = self._channel

        def requeue() -> None:
            self._requeues -= 1
            if channel.is_open:
                channel.basic_nack(tag, requeue=True)

        channel.connection.call_later(delay, requeue)

    def _on_idle(self) -> None:
        self._scheduled = False
        if self._channel.is_open:
            self.flush()
