"""How the RabbitMQ transport settles deliveries on one channel: acks, nacks, delayed nacks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only missive.adapters.rabbitmq imports pika first, so that it can say
    from pika.adapters.blocking_connection import BlockingChannel  # which extra is missing

__all__ = ["Acks"]

_NO_TAG = 1 << 64  # above every delivery tag


class Acks:
    """Settles deliveries on one channel: coalesced acks, nacks now or after a delay.

    The delivery loop decides when to ack; this class decides how. It settles in
    delivery-tag order, so once delivery ``tag`` is settled every earlier delivery on
    the channel is too, except one waiting for a delayed requeue: one
    ``basic_ack(last, multiple=True)`` covers a whole run of tags, unless a delayed
    requeue is pending, when each tag is acked on its own (a multiple ack would also
    ack the message waiting to be requeued).

    A delivery whose copy waits for its commit (a delayed retry, :attr:`pending`)
    must not be acked before it: the acks of later deliveries are then *held*, and
    sent with the originals, again as one multiple ack, once :meth:`committed` says
    the copies are on disk. So the acks stay batched while copies are in flight.

    The deliveries handed back at a stop are rejected last (:meth:`reject_handed_back`,
    just before the channel closes), after every ack: a quorum queue keeps the
    settlements a channel sends while 32 of its commands are not applied yet, and
    drops them if the channel closes first (RabbitMQ issue 10327), so an ack sent
    behind a burst of rejects could be lost and its message delivered again.

    If the connection drops, the unsent acks are lost and RabbitMQ delivers those
    messages again: duplicates, never a lost message. Nothing is kept per message
    but the tags of retries in flight, of the acks held behind them and of the
    deliveries handed back.
    """

    __slots__ = ("_channel", "_requeues", "handed_back", "held", "owed", "pending", "through")

    def __init__(self, channel: BlockingChannel) -> None:
        self._channel = channel
        self._requeues = 0
        #: How many handled messages are not acked on the broker yet (a send failed).
        self.owed = 0
        #: Deliveries whose copy is not committed yet: none is acked before it is.
        self.pending: set[int] = set()
        #: Deliveries handled whose ack waits behind a pending one.
        self.held: list[int] = []
        #: The last delivery :meth:`send` was given: every one up to it is settled.
        self.through = 0
        #: Deliveries handed back (received, not started), rejected by the close.
        self.handed_back: list[int] = []

    def send(self, tags: list[int]) -> None:
        """Ack the deliveries ``tags`` (in delivery order, every earlier one settled):
        one multiple ack if it can, holding those above a pending retry."""
        self.through = tags[-1]
        if self.pending:
            lowest = min(self.pending)
            if tags[-1] > lowest:
                self.held += [tag for tag in tags if tag > lowest]
                tags = [tag for tag in tags if tag < lowest]
                if not tags:
                    return
        self._send(tags)

    def committed(self, tags: list[int]) -> None:
        """The copies of ``tags`` are on disk: ack those originals, and the acks held
        that no pending retry precedes any more."""
        pending = self.pending
        pending.difference_update(tags)
        lowest = min(pending) if pending else _NO_TAG
        held, through = self.held, self.through
        now = [tag for tag in held if tag < lowest]
        if now:
            self.held = [tag for tag in held if tag > lowest]
        # An original past ``through``, or past a pending one, has unsettled or
        # pending deliveries before it: acked on its own.
        alone = [tag for tag in tags if tag > through or tag > lowest]
        if len(alone) < len(tags):
            now = sorted(now + [tag for tag in tags if tag <= through and tag < lowest])
        if now:
            self._send(now)
        if alone:
            self.send_each(alone)

    def _send(self, tags: list[int]) -> None:
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

    def reject_handed_back(self) -> None:
        """Reject with requeue the deliveries handed back: the last settlements before
        the channel closes (see the class), which requeues them too if these are lost."""
        tags, self.handed_back = self.handed_back, []
        for tag in tags:
            self._channel.basic_reject(tag, requeue=True)

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
