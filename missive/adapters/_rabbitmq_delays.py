"""Delayed retries on RabbitMQ: a ladder of delay queues per work queue.

A message due a delayed retry is copied, with its attempt state in headers, to one of
the work queue's delay queues, ``<queue>.missive-delay.<seconds>`` for 1, 2, 4, ...
seconds, and the original is acked once the broker has committed the copy. Each delay
queue has a message TTL (``x-message-ttl``) and dead-letters what expires back to the
work queue (``x-dead-letter-exchange=""``, ``x-dead-letter-routing-key=<queue>``),
where it is delivered as a new message. One TTL per queue keeps each queue in expiry
order, which per-message TTLs in one queue would not (RabbitMQ expires only at the
head). No plugin, nothing held by a consumer: the wait is kept by the broker, in
durable queues, as persistent messages.

The copies go out on a connection of their own, in AMQP transactions: the
transport publishes the copies of a batch's retries, commits them in one round
trip (which returns once RabbitMQ has them, persisted), and only then acks the
originals. Their own connection lets a return (``mandatory``: a delay queue deleted
under us) be read without dispatching the consumer's deliveries.

A delay is rounded *down* to a level (the policy's jitter already spreads them; a
retry never comes later than the policy allows), except below 1 s, where it goes to
the 1 s level: published straight back, a retry would spin through the broker while
what failed is still down. Past the top level it waits the top level's time.

Only :mod:`missive.adapters._rabbitmq_transport` uses this module, once
:mod:`missive.adapters.rabbitmq` found pika.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import BasicProperties

from missive.adapters._rabbitmq_copies import SUFFIX, copy_properties
from missive.message import Message

__all__ = ["MAX_LEVELS", "Delays", "delay_queue", "levels_up_to"]

#: The most delay queues a work queue gets: 1 s to 2**19 s (about 6 days).
MAX_LEVELS = 20
# Declaration replies no reconnection fixes: access refused, other arguments.
_REFUSED = frozenset({403, 406})


def levels_up_to(longest: float) -> tuple[int, ...]:
    """The ladder's levels in seconds: 1, 2, 4, ... up to the largest not above
    ``longest`` (1 at least), :data:`MAX_LEVELS` at most."""
    levels = [1]
    while len(levels) < MAX_LEVELS and levels[-1] * 2 <= longest:
        levels.append(levels[-1] * 2)
    return tuple(levels)


def delay_queue(queue: str, seconds: int) -> str:
    """The name of ``queue``'s delay queue of ``seconds``."""
    return f"{queue}{SUFFIX}{seconds}"


def level_for(levels: tuple[int, ...], delay: float) -> int:
    """The level a wait of ``delay`` seconds goes to: rounded down, 1 s at least."""
    return levels[max(bisect.bisect_right(levels, delay) - 1, 0)]


class Delays:
    """The delay ladders of one transport's work queues, on one connection.

    :param queues: the work queues consumed.
    :param longest: returns the longest delay the retry policies may ask for, or
        ``None`` when none has delayed retries (then nothing is declared until a
        retry is made after all).

    While the ladder is on, the consumer keeps each delivery's properties
    (:meth:`keep`) until it is settled, so that a retry copies them exactly.
    """

    __slots__ = (
        "_channel",
        "_connection",
        "_declared",
        "_kept",
        "_longest",
        "_parameters",
        "_returned",
        "levels",
        "queues",
        "refused",
        "uncommitted",
    )

    def __init__(
        self,
        queues: tuple[str, ...],
        longest: Callable[[], float | None],
        parameters: pika.connection.Parameters,
    ) -> None:
        self.queues = queues
        self._longest = longest
        self._parameters = parameters
        #: The levels in seconds; empty until a policy has delayed retries.
        self.levels: tuple[int, ...] = ()
        # The copies' own connection, and its channel in transaction mode.
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        #: Copies published and not committed yet.
        self.uncommitted = 0
        self._returned = 0  # copies RabbitMQ could not route (mandatory)
        self._declared: set[str] = set()  # work queues whose ladder is declared
        self._kept: collections.OrderedDict[int, BasicProperties] = collections.OrderedDict()
        #: The error of a declaration RabbitMQ refused (a delay queue declared with
        #: other arguments, or no permission): no reconnection fixes it.
        self.refused: BaseException | None = None

    @property
    def on(self) -> bool:
        """Whether a ladder is declared on this connection."""
        return self._channel is not None

    def open(self) -> None:
        """On a new consumer connection: open the copies' connection and declare every
        work queue's ladder, if any policy has delayed retries."""
        self.forget()
        longest = self._longest()
        if longest is None:
            self.levels = ()
            return
        self._open(longest)

    def _open(self, longest: float) -> None:
        self.levels = levels_up_to(longest)
        self._connection = connection = pika.BlockingConnection(self._parameters)
        channel = connection.channel()
        channel.tx_select()
        channel.add_on_return_callback(self._on_return)
        self._channel = channel
        for queue in self.queues:
            self._declare(queue)

    def _on_return(self, *args: Any) -> None:
        self._returned += 1

    def _declare(self, queue: str) -> None:
        channel = self._channel
        assert channel is not None
        for seconds in self.levels:
            name = delay_queue(queue, seconds)
            arguments = {
                "x-message-ttl": seconds * 1000,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
            }
            try:
                channel.queue_declare(name, durable=True, arguments=arguments)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code in _REFUSED:
                    exc.add_note(
                        f"RabbitMQ refused to declare the delay queue {name!r} for delayed "
                        f"retries ({exc.reply_code} {exc.reply_text}): it must be durable, "
                        f"with x-message-ttl={seconds * 1000}, x-dead-letter-exchange='' and "
                        f"x-dead-letter-routing-key={queue!r}, and the user needs configure "
                        "and write access to it; delete or fix it, then start again"
                    )
                    self.refused = exc
                raise
        self._declared.add(queue)

    def keep(self, tag: int, properties: BasicProperties) -> None:
        """Keep a delivery's properties until it is settled (the consumer's hot path)."""
        self._kept[tag] = properties

    def settled_through(self, last: int) -> None:
        """Forget the deliveries up to ``last``: a multiple ack settled them."""
        kept = self._kept
        while kept:
            tag = next(iter(kept))
            if tag > last:
                return
            del kept[tag]

    def settled(self, tags: list[int]) -> None:
        """Forget exactly the deliveries ``tags``."""
        pop = self._kept.pop
        for tag in tags:
            pop(tag, None)

    def forget(self) -> None:
        """Forget every delivery kept (the consumer's connection is gone, and its tags
        with it) and close the copies' connection: what it did not commit is dropped."""
        self._kept.clear()
        self._declared.clear()
        self._channel = None
        self.uncommitted = self._returned = 0
        connection, self._connection = self._connection, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()

    def commit(self) -> None:
        """Commit the copies published so far: on return, RabbitMQ has every one in its
        delay queue, and the originals may be acked.

        :raises pika.exceptions.AMQPError: if the commit failed, or RabbitMQ returned a
            copy it could not route (a delay queue deleted while we ran): the originals
            must not be acked; a reconnection declares the ladder again.
        """
        channel, connection = self._channel, self._connection
        assert channel is not None
        assert connection is not None
        channel.tx_commit()
        connection.process_data_events(time_limit=0)  # runs _on_return for each return
        self.uncommitted = 0
        if self._returned:
            returned, self._returned = self._returned, 0
            raise pika.exceptions.AMQPChannelError(
                f"RabbitMQ could not route {returned} delayed retries to their delay queue "
                "(deleted while the adapter ran?): their messages are not acked and come "
                "again; the next connection declares the delay queues again"
            )

    def service(self) -> None:
        """Let the copies' connection answer RabbitMQ's heartbeats while it is idle."""
        connection = self._connection
        if connection is not None:
            connection.process_data_events(time_limit=0)

    def retry(self, tag: int, message: Message, delay: float, state: Mapping[str, Any]) -> None:
        """Publish a copy of delivery ``tag`` to the level for ``delay``, in the open
        transaction; the caller acks the original only after :meth:`commit`.

        Raises pika's error if it could not be published (the original, unacked, is
        then redelivered, and the uncommitted copies dropped: never a loss).
        """
        attributes = message.attributes
        queue = attributes["queue"]
        if self._channel is None:  # a policy with delayed retries set after connect
            self._open(max(self._longest() or 0.0, delay))
        elif queue not in self._declared:
            self._declare(queue)
        properties = self._kept.pop(tag, None)
        copy = copy_properties(properties, message, state)
        seconds = level_for(self.levels, delay)
        channel = self._channel
        assert channel is not None
        channel.basic_publish(
            "", delay_queue(queue, seconds), message.raw_data, copy, mandatory=True
        )
        self.uncommitted += 1
