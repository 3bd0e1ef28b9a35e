"""RedisStreamsAdapter: a Redis stream read in a consumer group, at-least-once.

Private: import it from :mod:`missive.adapters.redis`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Any

from missive._typing import M
from missive.adapters._redis_common import (
    RedisAdapterBase,
    consumer_name,
)
from missive.adapters._redis_streams_transport import StreamsTransport
from missive.processor import Processor

__all__ = ["DEFAULT_GROUP", "DEFAULT_STREAM", "RedisStreamsAdapter"]

logger = logging.getLogger("missive.adapters.redis")

#: The stream :class:`RedisStreamsAdapter` reads when given none.
DEFAULT_STREAM = "missive"
#: The consumer group :class:`RedisStreamsAdapter` reads in when given none.
DEFAULT_GROUP = "missive"


class RedisStreamsAdapter(RedisAdapterBase[M]):
    """Consumes a Redis stream in a consumer group: **at-least-once** delivery.

    Each entry's ``field`` (``data`` by default) is the message's bytes; the entry id
    (``b"1700000000000-0"``) is its id, kept on redelivery. Attributes: ``stream``,
    ``group``, ``consumer``, ``delivery_count`` (1 on the first delivery) and, when
    the entry has other fields, ``fields`` (a dict of them).

    * The group is created if missing (with the stream: MKSTREAM), starting at
      ``start_id``: ``"0"`` (the default) takes every entry already in the stream,
      ``"$"`` only those added later.
    * Entries are read ``batch_size`` at a time (XREADGROUP COUNT, BLOCK
      ``block_ms``) and handled one at a time in the thread that called :meth:`run`.
    * **Ack**: an acked or dead-lettered entry is XACKed; the acks of a batch are sent
      together, with the next read. A crash before they are sent only means the
      entries are delivered again.
    * **Nack**: the entry stays pending and is delivered again (to this consumer or
      another) once it has been idle ``claim_idle_ms`` (XAUTOCLAIM). The same goes
      for entries that a consumer which died, or lost its connection, had read but
      not acked.
    * **Delayed retries** (a processor or handler :class:`~missive.Retry` policy with
      ``delayed``): the entry is XACKed and a copy kept in the sorted set
      ``<stream>:missive-delayed:<group>``, in one Lua script; once due, a worker of
      the group adds it back to the stream (a new entry id; the message keeps its id,
      bytes, fields and delivery count, plus the attempt state in its attributes).
      Nothing waits in the worker's memory.
    * **Poison messages**: an entry delivered more than ``max_deliveries`` times is
      dead-lettered without being handled, with a reason saying so.
    * **Errors**: when an entry cannot be handled and cannot be dead-lettered either
      (no DLQ set, DLQ write failed), it is not acked: the error is logged with the
      entry id, and the entry is redelivered after ``claim_idle_ms``, counting
      towards ``max_deliveries``.
    * **Connection loss**: logged, then the connection is re-established, waiting
      longer after each failure in a row, and consumption goes on; acks that could
      not be sent are sent then.
    * **Group gone** (the stream deleted, or lost by a Redis restart that kept
      nothing on disk): the group is made again from ``start_id``, with a WARNING
      naming it, whether found gone while consuming or when reconnecting.
    * **Stop** (:meth:`stop`, SIGINT, SIGTERM): the entry in hand is finished, the
      entries read but not started are handed back (made claimable at once by any
      consumer of the group, their delivery count unchanged), pending acks are sent
      and the connection closed. A read waiting for new entries is woken up.

    Acked entries stay in the stream (other groups may read it): trim it with XADD
    MAXLEN or XTRIM.

    :param message_cls: the message class to build each entry with.
    :param processor: the processor to run.
    :param stream: the stream's key; ``"missive"`` by default.
    :param group: the consumer group; ``"missive"`` by default.
    :param consumer: this consumer's name in the group; by default one unique to
        the process (such a consumer removes itself from the group on stop when it
        has nothing pending). Give a fixed name only to one process at a time.
    :param url: the Redis URL; default ``REDIS_URL``, else ``redis://127.0.0.1:6379/0``.
    :param field: the entry field that holds the message's bytes; an entry without
        it is dead-lettered.
    :param batch_size: the most entries one read takes (XREADGROUP COUNT); with
        ``concurrency`` above 1, a read takes up to twice the concurrency, less the
        entries in flight, so that memory stays bounded whatever the backlog.
    :param block_ms: how long one read waits for new entries, in milliseconds.
    :param claim_idle_ms: how long an entry stays pending (nacked, or read by a
        consumer that died) before it is delivered again, in milliseconds.
    :param max_deliveries: deliveries after which an entry is dead-lettered unhandled.
    :param start_id: where a group created by the adapter starts reading.
    :param max_reconnect_delay: the longest wait, in seconds, between reconnections.
    :param client_name: the name its connections give themselves (CLIENT SETNAME), as
        shown by CLIENT LIST.
    :param concurrency: how many messages are handled at once (see
        :class:`~missive.Adapter`); 1 by default: one at a time, in order.
    :param ordering_key: ``message -> hashable``: equal keys are handled one at a time.
    :param graceful_timeout: on a stop, the seconds messages in flight get to finish.
    :raises ValueError: if a number is out of range.
    """

    def __init__(
        self,
        message_cls: type[M],
        processor: Processor[M],
        stream: str = DEFAULT_STREAM,
        *,
        group: str = DEFAULT_GROUP,
        consumer: str | None = None,
        url: str | None = None,
        field: str = "data",
        batch_size: int = 100,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
        start_id: str = "0",
        max_reconnect_delay: float = 10.0,
        client_name: str | None = None,
        concurrency: int = 1,
        ordering_key: Callable[[M], Hashable] | None = None,
        graceful_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            message_cls,
            processor,
            url,
            max_reconnect_delay,
            client_name,
            concurrency=concurrency,
            ordering_key=ordering_key,
            graceful_timeout=graceful_timeout,
        )
        if batch_size < 1 or max_deliveries < 1:
            raise ValueError("batch_size and max_deliveries must be at least 1")
        if block_ms < 1 or claim_idle_ms < 1:
            raise ValueError("block_ms and claim_idle_ms must be at least 1 (millisecond)")
        self.stream = stream
        self.group = group
        self._own_consumer = consumer is None
        self.consumer = consumer_name() if consumer is None else consumer
        self.field = field
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.start_id = start_id
        self._field = field.encode("utf-8")
        self._attributes: dict[str, Any] = {
            "stream": stream,
            "group": group,
            "consumer": self.consumer,
            "delivery_count": 1,
        }
        # The longest wait of one read, in seconds (the loop's receive timeout).
        self.poll_timeout = block_ms / 1000
        # Whether an earlier connection found or made the group: if a later one has
        # to make it again, the group went away in between (a restart, say).
        self._had_group = False

    def transport(self) -> StreamsTransport:
        """A transport reading this adapter's stream in its group."""
        return StreamsTransport(self)
