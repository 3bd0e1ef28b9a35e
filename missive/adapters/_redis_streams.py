"""RedisStreamsAdapter: a Redis stream read in a consumer group, at-least-once.

Private: import it from :mod:`missive.adapters.redis`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import redis

from missive._typing import M
from missive.adapters._redis_common import (
    RedisAdapterBase,
    RedisTransportBase,
    consumer_name,
    make_client,
    redact,
    unblock_soon,
)
from missive.adapters._redis_groups import Entry, StreamGroup
from missive.processor import Processor
from missive.runtime.transport import Batch, Capability, Fault

__all__ = ["DEFAULT_GROUP", "DEFAULT_STREAM", "RedisStreamsAdapter"]

logger = logging.getLogger("missive.adapters.redis")

#: The stream :class:`RedisStreamsAdapter` reads when given none.
DEFAULT_STREAM = "missive"
#: The consumer group :class:`RedisStreamsAdapter` reads in when given none.
DEFAULT_GROUP = "missive"

_CAPABILITIES = Capability.REDELIVERY | Capability.DELIVERY_COUNTS | Capability.HAND_BACK
_CAPABILITIES |= Capability.PERSISTENCE | Capability.CONSUMER_GROUPS | Capability.ORDERED


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
    :param batch_size: how many entries one read takes (XREADGROUP COUNT).
    :param block_ms: how long one read waits for new entries, in milliseconds.
    :param claim_idle_ms: how long an entry stays pending (nacked, or read by a
        consumer that died) before it is delivered again, in milliseconds.
    :param max_deliveries: deliveries after which an entry is dead-lettered unhandled.
    :param start_id: where a group created by the adapter starts reading.
    :param max_reconnect_delay: the longest wait, in seconds, between reconnections.
    :param client_name: the name its connections give themselves (CLIENT SETNAME), as
        shown by CLIENT LIST.
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
    ) -> None:
        super().__init__(message_cls, processor, url, max_reconnect_delay, client_name)
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

    def transport(self) -> _StreamsTransport:
        """A transport reading this adapter's stream in its group."""
        return _StreamsTransport(self)


class _StreamsTransport(RedisTransportBase):
    """One connection reading the stream in the group: XREADGROUP, XAUTOCLAIM, XACK."""

    capabilities = _CAPABILITIES

    def __init__(self, adapter: RedisStreamsAdapter[Any]) -> None:
        self.adapter = adapter
        self.stream, self.group, self.consumer = adapter.stream, adapter.group, adapter.consumer
        self.groups = StreamGroup(
            self.stream, self.group, self.consumer, adapter.start_id, adapter.claim_idle_ms
        )
        self.ack_limit = adapter.batch_size
        # Follows the error's text, which says the entry is not acked.
        self.redelivery_note = (
            f"The entry stays pending in stream {self.stream!r} and is delivered again "
            f"after {adapter.claim_idle_ms} ms."
        )
        self._batch = Batch()
        self._client: redis.Redis | None = None
        self._client_id: int | None = None  # for wake() to unblock the read
        # Ids settled but not yet XACKed: kept across reconnections, sent by the next.
        self._owed: list[bytes] = []
        self._lost = False  # the connection failed: close() keeps the owed acks
        self._streams: dict[Any, Any] = {self.stream: ">"}
        self._claim_every = min(adapter.claim_idle_ms / 2000, 5.0)
        self._next_claim = 0.0
        self._cursor: Any = "0-0"

    def where(self) -> str:
        """The stream, group and URL (without its password)."""
        return f"stream {self.stream!r} group {self.group!r} at {redact(self.adapter.url)}"

    def connect(self) -> None:
        """Connect, make the group if it is missing, and note the connection's id."""
        adapter = self.adapter
        self._lost, self._next_claim, self._cursor = False, 0.0, "0-0"
        client = make_client(
            adapter.url, adapter.client_name, socket_timeout=adapter.poll_timeout + 30
        )
        self._client = client
        if self.groups.create(client) and adapter._had_group:
            self.groups.gone("when reconnecting")
            self._owed.clear()  # its pending list went with it, so the acks owed are moot
        adapter._had_group = True
        # The client only ever uses one connection at a time, so one connection.
        self._client_id = client.client_id()
        logger.info(
            "consuming stream %r as %r in group %r at %s",
            self.stream,
            self.consumer,
            self.group,
            redact(adapter.url),
        )

    def receive(self, max_messages: int, timeout: float) -> Batch:
        """Claim one idle pending entry when due, else send the owed acks and read."""
        batch = self._batch
        batch.clear()
        client = self._client
        assert client is not None
        now = time.monotonic()
        entries: list[Entry] = []
        counts: list[int] | None = None
        if now >= self._next_claim:
            self.flush()
            self._cursor, entries, counts = self.groups.claim(client, self._cursor)
            if self._cursor in (b"0-0", "0-0"):  # went round the whole pending list
                self._next_claim = now + self._claim_every
        if not entries:
            block = max(1, round(min(timeout, self._next_claim - now) * 1000))
            pipe = client.pipeline(transaction=False)
            owed = self._owed
            if owed:
                pipe.xack(self.stream, self.group, *owed)
            pipe.xreadgroup(self.group, self.consumer, self._streams, max_messages, block)
            try:
                read = pipe.execute()[-1]
            except redis.ResponseError as exc:
                self.groups.recreate(client, exc)
                owed.clear()  # the group's pending list went with it
                return batch
            owed.clear()
            if not read:
                return batch
            entries = read[0][1]
        field, fresh = self.adapter._field, self.adapter._attributes
        add_body, add_id, add_attributes = (
            batch.bodies.append,
            batch.ids.append,
            batch.attributes.append,
        )
        add_count, add_handle = batch.counts.append, batch.handles.append
        for index, (entry_id, fields) in enumerate(entries):
            count = counts[index] if counts else 1
            data = fields.get(field)
            if data is not None and len(fields) == 1 and count == 1:
                add_body(data)
                add_id(entry_id)
                add_attributes(fresh)  # one dict shared by every plain row
                add_count(1)
                add_handle(entry_id)
            else:
                self._add_unusual(entry_id, fields, count)
        return batch

    def _add_unusual(self, entry_id: bytes, fields: dict[bytes, bytes], count: int) -> None:
        # A redelivery, an entry with other fields, or one without the message field.
        adapter = self.adapter
        attributes = dict(adapter._attributes, delivery_count=count)
        field = adapter._field
        others = {k.decode("utf-8", "replace"): v for k, v in fields.items() if k != field}
        if others:
            attributes["fields"] = others
        data = fields.get(field)
        if data is not None:
            self._batch.add(data, entry_id, attributes, entry_id, count)
        else:
            problem = f"stream entry has no {adapter.field!r} field to read the message from"
            self._batch.add(b"", entry_id, attributes, entry_id, count, problem)

    def ack(self, handles: list[Any]) -> None:
        """Owe XACKs for ``handles``: sent with the next read, by flush() or close()."""
        self._owed.extend(handles)

    def requeue(self, handle: Any, delay: float = 0.0) -> None:
        """Nothing to do: the entry stays pending and is claimed after claim_idle_ms."""

    def flush(self) -> None:
        """XACK the owed entries now."""
        if self._owed and self._client is not None:
            self._client.xack(self.stream, self.group, *self._owed)
            self._owed.clear()

    def hand_back(self, batch: Batch, start: int) -> None:
        """Make the unstarted entries claimable at once, their delivery count unchanged."""
        assert self._client is not None
        self.groups.hand_back(self._client, batch.handles[start:], batch.counts[start:])

    def wake(self, from_signal: bool) -> None:
        """Unblock a waiting read (best effort: else it ends after ``block_ms``)."""
        if self._client_id is not None:
            unblock_soon(self.adapter.url, self.adapter.client_name, self._client_id)

    def fault(self, exc: BaseException) -> Fault:
        """Reconnect on a connection error (keeping the owed acks); stop on any other."""
        fault = super().fault(exc)
        self._lost = fault is Fault.RECONNECT
        return fault

    def close(self) -> None:
        """Send the owed acks, leave the group if this consumer is done, disconnect."""
        client, self._client_id = self._client, None
        if client is not None:
            if not self._lost:
                with contextlib.suppress(redis.RedisError):
                    self.flush()
                    if self.adapter._own_consumer:  # a generated name is never used again
                        self.groups.leave(client)
            self._client = None
            client.close()
            if self._lost:
                return  # the next connection sends the owed acks
        if self._owed:
            logger.warning(
                "stopped with %d acks unsent (connection lost); those entries will be "
                "delivered again",
                len(self._owed),
            )
            self._owed.clear()
