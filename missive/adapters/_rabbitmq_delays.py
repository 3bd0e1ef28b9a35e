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
import json
from collections.abc import Callable, Mapping
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from missive.attempts import FIRST_ATTEMPT, HISTORY, RETRIES, read_first_attempt, read_retries
from missive.message import Message

__all__ = ["MAX_LEVELS", "Delays", "delay_queue", "levels_up_to"]

#: The most delay queues a work queue gets: 1 s to 2**19 s (about 6 days).
MAX_LEVELS = 20
#: Between a work queue's name and a level's seconds in its delay queue's name.
SUFFIX = ".missive-delay."
#: Headers that carry where the message was first published: a copy back from a delay
#: queue has exchange ``""`` and the work queue as its routing key.
EXCHANGE = "x-missive-exchange"
ROUTING_KEY = "x-missive-routing-key"
#: Set on a copy whose ``message_id`` Missive gave (the publisher set none).
OWN_ID = "x-missive-own-id"
# Headers RabbitMQ adds on the way through a delay queue, or that Missive writes anew.
_DROPPED = frozenset({RETRIES, FIRST_ATTEMPT, HISTORY, EXCHANGE, ROUTING_KEY, OWN_ID})
_FIRST_DEATH = ("x-first-death-queue", "x-first-death-reason", "x-first-death-exchange")
_LAST_DEATH = ("x-last-death-queue", "x-last-death-reason", "x-last-death-exchange")
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
        copy = _copy_properties(properties, message, state)
        seconds = level_for(self.levels, delay)
        channel = self._channel
        assert channel is not None
        channel.basic_publish(
            "", delay_queue(queue, seconds), message.raw_data, copy, mandatory=True
        )
        self.uncommitted += 1

    def returned(
        self,
        queue: str,
        method: Basic.Deliver,
        properties: BasicProperties,
        headers: Mapping[str, Any],
    ) -> tuple[dict[str, Any], int | None, bool]:
        """A copy back from a delay queue: ``(attributes, delivery count, retried)``.

        A fresh copy (not redelivered) counts the deliveries before it, the first and
        one per delayed retry, and came back cleanly (``retried``). A copy redelivered
        after a crash is a suspect as any redelivery: counted by a quorum queue, else
        not (``None``).
        """
        retries = read_retries(headers)
        redelivered = method.redelivered
        count: int | None = retries + 1
        if redelivered:
            previous = headers.get("x-delivery-count")
            count = retries + 1 + previous if isinstance(previous, int) else None
        publisher_id = properties.message_id
        attributes = {
            "queue": queue,
            "exchange": headers.get(EXCHANGE, method.exchange),
            "routing_key": headers.get(ROUTING_KEY, method.routing_key),
            "redelivered": redelivered,
            "delivery_count": count,
            "headers": original_headers(headers, queue),
            "publisher_id": bool(publisher_id) and not headers.get(OWN_ID),
            "content_type": properties.content_type,
            "correlation_id": properties.correlation_id,
            "reply_to": properties.reply_to,
            RETRIES: retries,
            FIRST_ATTEMPT: read_first_attempt(headers),
            HISTORY: _history(headers.get(HISTORY)),
        }
        return attributes, count, not redelivered


def original_headers(headers: Mapping[str, Any] | None, queue: str) -> dict[str, Any]:
    """``headers`` without what Missive and the trips through ``queue``'s delay queues
    added: the headers the publisher sent (a new dict)."""
    if not headers:
        return {}
    prefix = queue + SUFFIX
    clean = {
        name: value
        for name, value in headers.items()
        if name not in _DROPPED and name != "x-delivery-count"
    }
    deaths = clean.get("x-death")
    if isinstance(deaths, list):
        kept = [
            death
            for death in deaths
            if not (isinstance(death, Mapping) and str(death.get("queue", "")).startswith(prefix))
        ]
        if kept:
            clean["x-death"] = kept
        else:
            del clean["x-death"]
    for names in (_FIRST_DEATH, _LAST_DEATH):
        if str(clean.get(names[0], "")).startswith(prefix):
            for name in names:
                clean.pop(name, None)
    return clean


def _copy_properties(
    properties: BasicProperties | None, message: Message, state: Mapping[str, Any]
) -> BasicProperties:
    """The properties of a retry's copy: the original's, its headers plus the attempt
    state, persistent, without a per-message TTL (which would cut the wait short) nor
    ``user_id`` (which RabbitMQ checks against the user publishing the copy)."""
    attributes = message.attributes
    headers = _encodable(original_headers(attributes.get("headers"), attributes["queue"]))
    headers[RETRIES] = int(state[RETRIES])
    first = state.get(FIRST_ATTEMPT)
    if first is not None:
        headers[FIRST_ATTEMPT] = repr(float(first))  # AMQP tables have doubles, pika not
    headers[HISTORY] = json.dumps(state.get(HISTORY, []), separators=(",", ":"))
    headers[EXCHANGE] = attributes.get("exchange") or ""
    headers[ROUTING_KEY] = attributes.get("routing_key") or ""
    if properties is None:  # not kept (the ladder came after the delivery): from attributes
        properties = pika.BasicProperties(
            content_type=attributes.get("content_type"),
            correlation_id=attributes.get("correlation_id"),
            reply_to=attributes.get("reply_to"),
            message_id=message.message_id.decode() if attributes.get("publisher_id") else None,
        )
    message_id = properties.message_id
    if not message_id:  # keep the id Missive gave, so that the retries share it
        message_id = message.message_id.decode("utf-8", "replace")
        headers[OWN_ID] = True
    elif not attributes.get("publisher_id", True):
        headers[OWN_ID] = True
    return pika.BasicProperties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=headers,
        delivery_mode=pika.DeliveryMode.Persistent,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        message_id=message_id,
        timestamp=properties.timestamp,
        type=properties.type,
        app_id=properties.app_id,
        cluster_id=properties.cluster_id,
    )


def _encodable(value: Any) -> Any:
    """``value`` with its floats as text: pika decodes a header's double (another
    client's) as a float, but cannot encode one."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {key: _encodable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_encodable(item) for item in value]
    return value


def _history(value: Any) -> list[Any]:
    """The history header (JSON text) as a list; empty if unreadable."""
    if isinstance(value, bytes | str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return list(value) if isinstance(value, list) else []
