"""The Redis Streams transport: XREADGROUP, XAUTOCLAIM and XACK on one connection.

Private: :class:`~missive.adapters.redis.RedisStreamsAdapter` makes one per run.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import redis

from missive.adapters._redis_common import RedisTransportBase, make_client, redact, unblock_soon
from missive.adapters._redis_groups import Entry, StreamGroup
from missive.runtime.transport import Batch, Capability, Fault

if TYPE_CHECKING:
    from missive.adapters._redis_streams import RedisStreamsAdapter

__all__ = ["StreamsTransport"]

logger = logging.getLogger("missive.adapters.redis")

_CAPABILITIES = Capability.REDELIVERY | Capability.DELIVERY_COUNTS | Capability.HAND_BACK
_CAPABILITIES |= Capability.PERSISTENCE | Capability.CONSUMER_GROUPS | Capability.ORDERED


class StreamsTransport(RedisTransportBase):
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
        self._connections = 0  # made by this connect's client
        self._next_claim = 0.0
        self._cursor: Any = "0-0"

    def where(self) -> str:
        """The stream, group and URL (without its password)."""
        return f"stream {self.stream!r} group {self.group!r} at {redact(self.adapter.url)}"

    def connect(self) -> None:
        """Connect, make the group if it is missing, and note the connection's id."""
        adapter = self.adapter
        self._lost, self._next_claim, self._cursor = False, 0.0, "0-0"
        self._connections = 0
        client = make_client(
            adapter.url,
            adapter.client_name,
            on_connect=self._connected,
            socket_timeout=adapter.poll_timeout + 30,
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

    def _connected(self) -> None:
        self._connections += 1

    def receive(self, max_messages: int, timeout: float) -> Batch:
        """Claim one idle pending entry when due, else send the owed acks and read."""
        batch = self._batch
        batch.clear()
        client = self._client
        assert client is not None
        if self._connections > 1:  # redis-py replaced a connection Redis dropped
            raise redis.ConnectionError("Redis closed the connection while it was idle")
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

    def ack_out_of_order(self, handles: list[Any]) -> bool:
        """XACK is by entry id: owe them as any other ack."""
        self._owed.extend(handles)
        return True

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
