"""RedisStreamsAdapter: a Redis stream read in a consumer group, at-least-once.

Private: import it from :mod:`missive.adapters.redis`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from missive._typing import M
from missive.adapters._redis_common import (
    RedisAdapterBase,
    consumer_name,
    redact,
)
from missive.context import Outcome, ProcessingContext
from missive.errors import DLQWriteError, HandlingError
from missive.processor import Processor

__all__ = ["DEFAULT_GROUP", "DEFAULT_STREAM", "RedisStreamsAdapter"]

logger = logging.getLogger("missive.adapters.redis")

#: The stream :class:`RedisStreamsAdapter` reads when given none.
DEFAULT_STREAM = "missive"
#: The consumer group :class:`RedisStreamsAdapter` reads in when given none.
DEFAULT_GROUP = "missive"

_NACKED = Outcome.NACKED
_Entry = tuple[bytes, dict[bytes, bytes]]


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
    * **Connection loss**: logged, then the connection is re-established with
      backoff and consumption goes on; acks that could not be sent are sent then.
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
        self._attributes = {
            "stream": stream,
            "group": group,
            "consumer": self.consumer,
            "delivery_count": 1,
        }
        # Ids handled but not yet XACKed: at most one batch, kept across reconnections.
        self._acks: list[bytes] = []
        # CLIENT ID of the connection that reads, for stop() to unblock its read.
        self._client_id: int | None = None
        # Whether an earlier connection found or made the group: if a later one has
        # to make it again, the group went away in between (a restart, say).
        self._had_group = False

    def run(self) -> None:
        """Consume the stream until :meth:`stop`; see the class docstring."""
        describe = f"stream {self.stream!r} group {self.group!r} at {redact(self.url)}"
        with self.processor.context() as context:
            self._run_reconnecting(lambda: self._consume(context), describe)
        if self._acks:
            logger.warning(
                "stopped with %d acks unsent (connection lost); those entries will be "
                "delivered again",
                len(self._acks),
            )
            self._acks.clear()
        logger.info("Streams adapter stopped (consumer %r)", self.consumer)

    def _consume(self, context: ProcessingContext[M]) -> None:
        client = self._client(socket_timeout=self.block_ms / 1000 + 30)
        try:
            if self._create_group(client) and self._had_group:
                self._group_gone("when reconnecting")
            self._had_group = True
            # The client only ever uses one connection at a time, so one connection.
            self._client_id = client.client_id()
            self._consuming = True
            logger.info(
                "consuming stream %r as %r in group %r at %s",
                self.stream,
                self.consumer,
                self.group,
                redact(self.url),
            )
            self._set_ready()
            self._loop(client, context)
            self._flush(client)
            self._leave_group(client)
        finally:
            self._client_id = None
            client.close()

    def stop(self) -> None:
        """Ask :meth:`run` to stop; a read waiting for entries is woken at once. Thread-safe.

        The wake-up (CLIENT UNBLOCK, from a short-lived thread and connection) is
        best effort: at worst the stop takes effect when the read's ``block_ms`` ends.
        """
        super().stop()
        client_id = self._client_id
        if client_id is not None:
            threading.Thread(
                target=self._unblock, args=(client_id,), name="missive-redis-unblock", daemon=True
            ).start()

    def _unblock(self, client_id: int) -> None:
        try:
            with self._client() as client:
                client.client_unblock(client_id)
        except redis.RedisError as exc:
            logger.debug("could not wake the stream read up on stop: %s", exc)

    def _create_group(self, client: redis.Redis) -> bool:
        # Whether the group was missing (and so was made, with the stream if need be).
        try:
            client.xgroup_create(self.stream, self.group, id=self.start_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    def _loop(self, client: redis.Redis, context: ProcessingContext[M]) -> None:
        claim_every = min(self.claim_idle_ms / 2000, 5.0)
        next_claim = 0.0
        cursor: Any = "0-0"
        streams: dict[Any, Any] = {self.stream: ">"}
        acks = self._acks
        while not self.stop_requested:
            now = time.monotonic()
            entries: list[_Entry] = []
            counts: list[int] | None = None
            if now >= next_claim:
                self._flush(client)
                cursor, entries, counts = self._claim(client, cursor)
                if cursor in (b"0-0", "0-0"):  # went round the whole pending list
                    next_claim = now + claim_every
            if not entries:
                block = max(1, min(self.block_ms, int((next_claim - now) * 1000)))
                pipe = client.pipeline(transaction=False)
                if acks:
                    pipe.xack(self.stream, self.group, *acks)
                pipe.xreadgroup(
                    self.group, self.consumer, streams, count=self.batch_size, block=block
                )
                try:
                    read = pipe.execute()[-1]
                except redis.ResponseError as exc:
                    self._recreate_group(client, exc)
                    continue
                acks.clear()
                if not read:
                    continue
                entries = read[0][1]
            self._handle_batch(client, context, entries, counts)

    def _recreate_group(self, client: redis.Redis, exc: redis.ResponseError) -> None:
        # NOGROUP: no such stream or group; UNBLOCKED: the stream went while we waited.
        if not str(exc).rpartition("caused error: ")[2].startswith(("NOGROUP", "UNBLOCKED")):
            raise exc
        self._group_gone("while consuming")
        self._create_group(client)

    def _group_gone(self, when: str) -> None:
        # Its pending list went with it, so the acks owed to it are moot.
        logger.warning(
            "stream %r group %r was gone %s (deleted, or Redis restarted without keeping "
            "it on disk); made it again, reading from %r: entries the old group had not "
            "seen acked are delivered again only if the stream still holds them after "
            "that id, and are otherwise lost. To keep streams across restarts, run Redis "
            "with appendonly yes (docs/redis.md, When Redis restarts)",
            self.stream,
            self.group,
            when,
            self.start_id,
        )
        self._acks.clear()

    def _claim(
        self, client: redis.Redis, cursor: Any
    ) -> tuple[Any, list[_Entry], list[int] | None]:
        # Entries idle for claim_idle_ms (nacked, or read by a consumer that died), one
        # at a time: one of them may crash its worker, and every entry claimed with it
        # would have its delivery count raised by each crash, then be dead-lettered as
        # poison without ever being handled.
        try:
            cursor, claimed, *_ = client.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, cursor, count=1
            )
        except redis.ResponseError as exc:
            self._recreate_group(client, exc)
            return "0-0", [], None
        entries = [(entry_id, fields) for entry_id, fields in claimed if fields is not None]
        if not entries:
            return cursor, [], None
        # Their delivery counts, which XAUTOCLAIM raised by one, from the pending list.
        pipe = client.pipeline(transaction=False)
        for entry_id, _ in entries:
            pipe.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        counts = [found[0]["times_delivered"] if found else 1 for found in pipe.execute()]
        logger.info("claimed %d idle pending entries of stream %r", len(entries), self.stream)
        return cursor, entries, counts

    def _handle_batch(
        self,
        client: redis.Redis,
        context: ProcessingContext[M],
        entries: list[_Entry],
        counts: list[int] | None,
    ) -> None:
        process = context.process
        acks = self._acks
        field = self._field
        cls = self.message_cls
        fresh = self._attributes
        stop_requested = self.stop_event.is_set
        for index, (entry_id, fields) in enumerate(entries):
            if stop_requested():
                self._hand_back(client, entries[index:], counts[index:] if counts else None)
                return
            count = counts[index] if counts else 1
            data = fields.get(field)
            try:
                if data is not None and len(fields) == 1 and count == 1:
                    outcome = process(cls(data, entry_id, fresh))
                else:
                    outcome = self._handle_unusual(context, entry_id, fields, count)
            except (HandlingError, DLQWriteError) as exc:
                logger.error(
                    "entry %r of stream %r was not handled and is not acked; it will be "
                    "delivered again after %d ms: %s",
                    entry_id,
                    self.stream,
                    self.claim_idle_ms,
                    exc,
                )
                continue
            if outcome is not _NACKED:
                acks.append(entry_id)
                if count > 1:
                    # A redelivery may be the neighbour of a poison entry that crashed
                    # the worker: ack it now, so the next crash does not bring it back.
                    self._flush(client)

    def _handle_unusual(
        self, context: ProcessingContext[M], entry_id: bytes, fields: dict[bytes, bytes], count: int
    ) -> Outcome:
        # A redelivery, an entry with other fields, or one without the message field.
        attributes: dict[str, Any] = dict(self._attributes, delivery_count=count)
        others = {k.decode("utf-8", "replace"): v for k, v in fields.items() if k != self._field}
        if others:
            attributes["fields"] = others
        data = fields.get(self._field)
        message = self.message_cls(b"" if data is None else data, entry_id, attributes)
        if data is None:
            return context.dead_letter(
                message, f"stream entry has no {self.field!r} field to read the message from"
            )
        if self.max_deliveries is not None and count > self.max_deliveries:
            return context.dead_letter(
                message,
                f"delivered {count} times, more than max_deliveries={self.max_deliveries}: "
                "every earlier delivery was nacked or not acked (poison message)",
            )
        return context.process(message)

    def _hand_back(
        self, client: redis.Redis, entries: list[_Entry], counts: list[int] | None
    ) -> None:
        # Unstarted entries: leave them pending but idle, so that any consumer claims
        # them at once, and undo the delivery that did not happen in their count.
        by_count: dict[int, list[Any]] = {}
        for index, (entry_id, _) in enumerate(entries):
            by_count.setdefault(counts[index] if counts else 1, []).append(entry_id)
        pipe = client.pipeline(transaction=False)
        for count, ids in by_count.items():
            pipe.xclaim(
                self.stream,
                self.group,
                self.consumer,
                0,
                ids,
                idle=self.claim_idle_ms,
                retrycount=count - 1,
                justid=True,
            )
        pipe.execute()
        logger.info("handed back %d unstarted entries of stream %r", len(entries), self.stream)

    def _flush(self, client: redis.Redis) -> None:
        if self._acks:
            client.xack(self.stream, self.group, *self._acks)
            self._acks.clear()

    def _leave_group(self, client: redis.Redis) -> None:
        # A generated consumer name is never used again: remove it once it holds nothing.
        if self._own_consumer and not client.xpending_range(
            self.stream, self.group, "-", "+", 1, consumername=self.consumer
        ):
            client.xgroup_delconsumer(self.stream, self.group, self.consumer)
