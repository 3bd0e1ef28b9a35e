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

The copies go out on a connection of their own, in AMQP transactions, from a thread
of their own (:mod:`missive.adapters._rabbitmq_publisher`): a commit returns once
RabbitMQ has them, persisted, and only then are the originals acked, while the
consumer goes on handling. Their own connection lets a return (``mandatory``: a delay
queue deleted under us) be read without dispatching the consumer's deliveries.

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
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import BasicProperties

from missive.adapters._rabbitmq_copies import SUFFIX, copy_properties
from missive.adapters._rabbitmq_publisher import CopyPublisher
from missive.message import Message

__all__ = ["MAX_LEVELS", "Delays", "delay_queue", "levels_up_to"]

#: The most delay queues a work queue gets: 1 s to 2**19 s (about 6 days).
MAX_LEVELS = 20
# Declaration replies no reconnection fixes: access refused, other arguments.
_REFUSED = frozenset({403, 406})
# How long a stop waits for the copies submitted to be committed, in seconds.
_CLOSE_WAIT = 5.0


def _nothing() -> None:
    pass


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
        "_kept",
        "_longest",
        "_parameters",
        "_publisher",
        "_wake",
        "levels",
        "queues",
        "refused",
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
        # The copies' own connection and thread, once a ladder is declared.
        self._publisher: CopyPublisher | None = None
        self._wake: Callable[[], None] = _nothing
        self._kept: collections.OrderedDict[int, BasicProperties] = collections.OrderedDict()
        #: The error of a declaration RabbitMQ refused (a delay queue declared with
        #: other arguments, or no permission): no reconnection fixes it.
        self.refused: BaseException | None = None

    @property
    def on(self) -> bool:
        """Whether a ladder is declared on this connection."""
        return self._publisher is not None

    @property
    def publisher(self) -> CopyPublisher:
        """The copies' publisher (only while :attr:`on`)."""
        assert self._publisher is not None
        return self._publisher

    def open(self, wake: Callable[[], None]) -> None:
        """On a new consumer connection: open the copies' connection and declare every
        work queue's ladder, if any policy has delayed retries. ``wake`` (thread-safe)
        ends the consumer's wait once copies are committed."""
        self.forget()
        self._wake = wake
        longest = self._longest()
        if longest is None:
            self.levels = ()
            return
        self._open(longest)

    def _open(self, longest: float) -> None:
        self.levels = levels_up_to(longest)
        connection = pika.BlockingConnection(self._parameters)
        try:
            channel = connection.channel()
            channel.tx_select()
            for queue in self.queues:
                self._declare(channel, queue)
        except BaseException:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()
            raise
        # From here on, only the publisher's thread uses the connection.
        self._publisher = CopyPublisher(connection, channel, self._wake)

    def _declare(self, channel: BlockingChannel, queue: str) -> None:
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
        with it), and stop the publisher and close its connection: what it did not
        commit is dropped."""
        self._kept.clear()
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close(timeout=_CLOSE_WAIT)

    def retry(self, tag: int, message: Message, delay: float, state: Mapping[str, Any]) -> None:
        """Hand a copy of delivery ``tag``, for the level of ``delay``, to the publisher;
        the caller acks the original once :meth:`CopyPublisher.committed` returns ``tag``.

        Raises the publisher's error, if it failed (the originals not acked are then
        redelivered, and the uncommitted copies dropped: never a loss).
        """
        queue = message.attributes["queue"]
        if self._publisher is None:  # a policy with delayed retries set after connect
            self._open(max(self._longest() or 0.0, delay))
        publisher = self.publisher
        if publisher.failure is not None:
            raise publisher.failure
        properties = self._kept.pop(tag, None)
        copy = copy_properties(properties, message, state)
        seconds = level_for(self.levels, delay)
        publisher.submit(tag, delay_queue(queue, seconds), message.raw_data, copy)
