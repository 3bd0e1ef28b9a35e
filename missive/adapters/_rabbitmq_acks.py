"""How the RabbitMQ transport settles deliveries on one channel: acks, nacks, delayed nacks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only missive.adapters.rabbitmq imports pika first, so that it can say
    from pika.adapters.blocking_connection import BlockingChannel  # which extra is missing

__all__ = ["Acks"]


class Acks:
    """Settles deliveries on one channel: coalesced acks, nacks now or after a delay.

    The delivery loop decides when to ack; this class decides how. It settles in
    delivery-tag order, so once delivery ``tag`` is settled every earlier delivery on
    the channel is too, except one waiting for a delayed requeue: one
    ``basic_ack(last, multiple=True)`` covers a whole run of tags, unless a delayed
    requeue is pending, when each tag is acked on its own (a multiple ack would also
    ack the message waiting to be requeued).

    If the connection drops, the unsent acks are lost and RabbitMQ delivers those
    messages again: duplicates, never a lost message. Nothing is kept per message.
    """

    __slots__ = ("_channel", "_requeues", "owed")

    def __init__(self, channel: BlockingChannel) -> None:
        self._channel = channel
        self._requeues = 0
        #: How many handled messages are not acked on the broker yet (a send failed).
        self.owed = 0

    def send(self, tags: list[int]) -> None:
        """Ack the deliveries ``tags`` (in delivery order): one multiple ack if it can."""
        self.owed = len(tags)  # until the broker has them
        if self._requeues:
            for tag in tags:
                self._channel.basic_ack(tag)
        else:
            self._channel.basic_ack(tags[-1], multiple=True)
        self.owed = 0

    def send_each(self, tags: list[int]) -> None:
        """Ack exactly the deliveries ``tags``, while earlier ones are still in flight."""
        self.owed = len(tags)
        for tag in tags:
            self._channel.basic_ack(tag)
        self.owed = 0

    def requeue(self, tag: int, delay: float) -> None:
        """Nack delivery ``tag`` with requeue: now, or after ``delay`` seconds."""
        channel = self._channel
        if delay <= 0:
            channel.basic_nack(tag, requeue=True)
            return
        self._requeues += 1

        def requeue() -> None:
            self._requeues -= 1
            if channel.is_open:
                channel.basic_nack(tag, requeue=True)

        channel.connection.call_later(delay, requeue)
