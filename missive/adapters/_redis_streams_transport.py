"""The Redis Streams transport: XREADGROUP, XAUTOCLAIM, XACK, delayed retries, one connection.

Private: :class:`~missive.adapters.redis.RedisStreamsAdapter` makes one per run.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import redis

from missive.adapters._redis_common import RedisTransportBase, make_client, redact, unblock_soon
from missive.adapters._redis_delays import MOVE_EVERY, DelayedSet, read_copy
from missive.adapters._redis_groups import Entry, StreamGroup
from missive.message import Message
from missive.runtime.transport import Batch, Capability, Fault

if TYPE_CHECKING:
    from missive.adapters._redis_streams import RedisStreamsAdapter

__all__ = ["StreamsTransport"]

logger = logging.getLogger("missive.adapters.redis")

_CAPABILITIES = Capability.REDELIVERY | Capability.DELIVERY_COUNTS | Capability.HAND_BACK
_CAPABILITIES |= Capability.PERSISTENCE | Capability.CONSUMER_GROUPS | Capability.ORDERED
_CAPABILITIES |= Capability.DELAYED_RETRY


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
        # Delayed retries not yet scheduled (schedule script arguments): sent likewise.
        self._owed_retries: list[list[Any]] = []
        self._lost = False  # the connection failed: close() keeps the owed acks
        self._streams: dict[Any, Any] = {self.stream: ">"}
        self._claim_every = min(adapter.claim_idle_ms / 2000, 5.0)
        self._connections = 0  # made by this connect's client
        self._next_claim = 0.0
        self._cursor: Any = "0-0"
        self.delayed = DelayedSet(self.stream, self.group, adapter._field)
        self._group = self.group.encode("utf-8")
        self._next_move = 0.0
        # Delayed copies in hand: entry id -> deliveries before the copy's, so that a
        # hand-back sets the entry's own delivery count back, not the message's.
        self._bases: dict[Any, int] = {}

    def where(self) -> str:
        """The stream, group and URL (without its password)."""
        return f"stream {self.stream!r} group {self.group!r} at {redact(self.adapter.url)}"

    def source(self) -> str:
        return str(self.stream)

    def backlog(self) -> int | None:
        """The group's lag (entries not yet delivered) plus its pending entries."""
        client = self._client
        return None if client is None else self.groups.backlog(client)

    def connect(self) -> None:
        """Connect, make the group if it is missing, and note the connection's id."""
        adapter = self.adapter
        self._lost, self._next_claim, self._cursor = False, 0.0, "0-0"
        self._connections, self._next_move = 0, 0.0
        self._bases.clear()
        client = make_client(
            adapter.url,
            adapter.client_name,
            on_connect=self._connected,
            socket_timeout=adapter.poll_timeout + 30,
        )
        self._client = client
        self.delayed.bind(client)
        if self.groups.create(client) and adapter._had_group:
            self.groups.gone("when reconnecting")
            self._owed.clear()  # its pending list went with it, so the acks owed are moot
            self._owed_retries.clear()
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
        """Move due delayed copies back to the stream when it is time to look; claim
        one idle pending entry when due, else send the owed acks and read."""
        batch = self._batch
        batch.clear()
        client = self._client
        assert client is not None
        if self._connections > 1:  # redis-py replaced a connection Redis dropped
            raise redis.ConnectionError("Redis closed the connection while it was idle")
        now = time.monotonic()
        if now >= self._next_move:
            if self._owed_retries:  # into the set first: some may be due at once
                self.flush()
            self._next_move = self.delayed.move_due(now)
        entries: list[Entry] = []
        counts: list[int] | None = None
        if now >= self._next_claim:
            self.flush()
            self._cursor, entries, counts = self.groups.claim(client, self._cursor)
            if self._cursor in (b"0-0", "0-0"):  # went round the whole pending list
                self._next_claim = now + self._claim_every
        if not entries:
            wait = min(timeout, self._next_claim - now, self._next_move - now)
            block = max(1, round(wait * 1000))
            pipe = self._settle_on(client.pipeline(transaction=False))
            pipe.xreadgroup(self.group, self.consumer, self._streams, max_messages, block)
            try:
                read = self._settled(pipe.execute())[-1]
            except redis.ResponseError as exc:
                self.groups.recreate(client, exc)
                self._owed.clear()  # the group's pending list went with it
                self._owed_retries.clear()
                return batch
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
        # A redelivery, an entry with other fields, or one without the message field;
        # a delayed copy, or another group's (acked unhandled: it is not for us).
        adapter = self.adapter
        message_id, retried = entry_id, False
        state: dict[str, Any] | None = None
        if fields.get(b"x-missive-group", self._group) != self._group:
            self._owed.append(entry_id)
            return
        copy = read_copy(fields)
        if copy is not None:
            # Delivered once before as this entry: a retry. More often: a redelivery.
            retried = count == 1
            self._bases[entry_id] = copy.deliveries
            message_id, fields, state = copy.message_id, copy.fields, copy.state
            count += copy.deliveries
        attributes = dict(adapter._attributes, delivery_count=count)
        field = adapter._field
        others = {k.decode("utf-8", "replace"): v for k, v in fields.items() if k != field}
        if others:
            attributes["fields"] = others
        if state:
            attributes.update(state)
        data = fields.get(field)
        if data is not None:
            self._batch.add(data, message_id, attributes, entry_id, count, retried=retried)
        else:
            problem = f"stream entry has no {adapter.field!r} field to read the message from"
            self._batch.add(b"", message_id, attributes, entry_id, count, problem, retried)

    def ack(self, handles: list[Any]) -> None:
        """Owe XACKs for ``handles``: sent with the next read, by flush() or close()."""
        self._owed.extend(handles)
        if self._bases:
            self._forget(handles)

    def ack_out_of_order(self, handles: list[Any]) -> bool:
        """XACK is by entry id: owe them as any other ack."""
        self.ack(handles)
        return True

    def retry_later(
        self, handle: Any, message: Message, delay: float, state: dict[str, Any]
    ) -> None:
        """Owe a script that XACKs the entry and keeps a copy in the delayed set,
        atomically (sent with the next read, as the acks): added back to the stream once
        due, with ``state``, the message's id and its delivery count."""
        count = message.attributes.get("delivery_count")
        deliveries = count if isinstance(count, int) and count > 0 else 1
        message_id = message.message_id or handle
        if self._bases:
            self._forget([handle])
        body = message.raw_data
        args = self.delayed.schedule_args(handle, message_id, body, delay, deliveries, state)
        self._owed_retries.append(args)
        due = time.monotonic() + max(delay, MOVE_EVERY)
        self._next_move = min(self._next_move, due)

    def _settle_on(self, pipe: Any) -> Any:
        """Queue the owed retries and acks on ``pipe``; :meth:`_settled` reads them."""
        for args in self._owed_retries:
            self.delayed.schedule(args, pipe)
        if self._owed:
            pipe.xack(self.stream, self.group, *self._owed)
        return pipe

    def _settled(self, results: list[Any]) -> list[Any]:
        """Forget what :meth:`_settle_on` sent, now done; note a retry not kept."""
        if self._owed_retries:
            self.delayed.report_unkept(self._owed_retries, results)
        self._owed_retries.clear()
        self._owed.clear()
        return results

    def _forget(self, handles: list[Any]) -> None:
        bases = self._bases
        for handle in handles:
            bases.pop(handle, None)

    def requeue(self, handle: Any, delay: float = 0.0) -> None:
        """Nothing to do: the entry stays pending and is claimed after claim_idle_ms."""

    def flush(self) -> None:
        """Send the owed retries and XACKs now."""
        if (self._owed or self._owed_retries) and self._client is not None:
            self._settled(self._settle_on(self._client.pipeline(transaction=False)).execute())

    def hand_back(self, batch: Batch, start: int) -> None:
        """Make the unstarted entries claimable at once, their delivery count unchanged."""
        assert self._client is not None
        handles, counts = batch.handles[start:], batch.counts[start:]
        if self._bases:  # a delayed copy's own count, not the message's
            bases = self._bases
            counts = [
                None if c is None else c - bases.pop(h, 0)
                for h, c in zip(handles, counts, strict=True)
            ]
        self.groups.hand_back(self._client, handles, counts)

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
        if self._owed or self._owed_retries:
            logger.warning(
                "stopped with %d acks unsent (connection lost); those entries will be "
                "delivered again",
                len(self._owed) + len(self._owed_retries),
            )
            self._owed.clear()
            self._owed_retries.clear()
