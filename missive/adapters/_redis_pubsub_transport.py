"""The Redis Pub/Sub transport: a reader thread parses the socket into a local queue.

Private: :class:`~missive.adapters.redis.RedisPubSubAdapter` makes one per run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from itertools import repeat
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any, ClassVar

import redis

from missive.adapters._redis_common import CONNECTION_ERRORS, RedisTransportBase, redact
from missive.runtime.transport import Batch, Capability

if TYPE_CHECKING:
    from missive.adapters._redis_pubsub import RedisPubSubAdapter

__all__ = ["PubSubTransport"]

logger = logging.getLogger("missive.adapters.redis")

_POLL = 0.2  # seconds between looks for the subscription's confirmations
_END = object()  # the reader's last item: every subscription is confirmed gone
_WAKE = object()  # put by wake(): ends a waiting receive, then skipped


class PubSubTransport(RedisTransportBase):
    """Pub/Sub on one connection: a reader thread parses the socket into a local queue."""

    capabilities: ClassVar[Capability] = Capability.PATTERNS
    cannot_redeliver: ClassVar[str] = "Redis Pub/Sub cannot redeliver a message"
    ack_limit = 1 << 30  # acks are no-ops here: no call per message

    def __init__(self, adapter: RedisPubSubAdapter[Any]) -> None:
        self._adapter = adapter
        self.drain_timeout = adapter.drain_timeout
        names = ", ".join([*adapter.channels, *(f"pattern {p}" for p in adapter.patterns)])
        self._where = f"Pub/Sub {names} at {redact(adapter.url)}"
        self._source = names
        self._batch = Batch()
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._failure: BaseException | None = None  # raised by the next receive
        self._client: redis.Redis | None = None
        self._pubsub: Any = None
        self._reader: threading.Thread | None = None

    def connect(self) -> None:
        """Subscribe (waiting for every confirmation), then start the reader thread."""
        adapter = self._adapter
        queue: SimpleQueue[Any] = SimpleQueue()
        self._queue, self._failure = queue, None
        self._client = adapter._client(health_check_interval=adapter.health_check_interval)
        self._pubsub = pubsub = self._client.pubsub()  # type: ignore[no-untyped-call, unused-ignore]
        self._subscribe(pubsub, queue)
        self._reader = threading.Thread(
            target=self._read, args=(pubsub, queue), name="missive-redis-pubsub", daemon=True
        )
        self._reader.start()
        logger.info(
            "subscribed to %d channel(s) and %d pattern(s) at %s",
            len(adapter.channels),
            len(adapter.patterns),
            redact(adapter.url),
        )

    def receive(self, max_messages: int, timeout: float) -> Batch:
        """Up to ``max_messages`` from the reader's queue, waiting ``timeout`` for the first."""
        batch = self._batch
        batch.clear()
        if (failure := self._failure) is not None:
            self._failure = None
            raise failure
        queue = self._queue
        try:
            item = queue.get(timeout=timeout) if timeout > 0 else queue.get_nowait()
        except Empty:
            return batch
        get = queue.get_nowait
        add_body, add_attributes = batch.bodies.append, batch.attributes.append
        n = 0
        while True:
            if item.__class__ is list:
                if len(item) == 3:  # [b"message", channel, data]
                    add_attributes({"channel": item[1].decode("utf-8", "replace")})
                else:  # [b"pmessage", pattern, channel, data]
                    pattern = item[1].decode("utf-8", "replace")
                    add_attributes(
                        {"channel": item[2].decode("utf-8", "replace"), "pattern": pattern}
                    )
                add_body(item[-1])
                n += 1
                if n == max_messages:
                    break
            elif item is _END:
                batch.ended = True
                break
            elif item is not _WAKE:
                if not n:
                    raise item
                self._failure = item  # the rows before it are handled first
                break
            try:
                item = get()
            except Empty:
                break
        # Every row has a generated id, count 1 and no handle: filled per batch, not per row.
        batch.ids.extend(repeat(None, n))
        batch.counts.extend(repeat(1, n))
        batch.handles.extend(repeat(None, n))
        return batch

    def begin_drain(self) -> None:
        """Unsubscribe from everything; what Redis sent before still comes, then ``_END``."""
        try:
            self._pubsub.unsubscribe()
            self._pubsub.punsubscribe()
        except CONNECTION_ERRORS:
            pass  # the reader sees the failure too, and queues it

    def wake(self, from_signal: bool) -> None:
        """End a waiting :meth:`receive`, from any thread (SimpleQueue.put is reentrant)."""
        self._queue.put(_WAKE)

    def close(self) -> None:
        """Close the subscription, wait for the reader, close the client. Never raises."""
        pubsub, reader, client = self._pubsub, self._reader, self._client
        self._pubsub = self._reader = self._client = None
        with contextlib.suppress(Exception):
            if pubsub is not None:
                pubsub.close()  # shuts the socket down: a reader still blocked in it ends
        if reader is not None:
            reader.join(5)
        with contextlib.suppress(Exception):
            if client is not None:
                client.close()

    def where(self) -> str:
        """The channels and patterns, and the URL without its password."""
        return self._where

    def source(self) -> str:
        return self._source

    def _subscribe(self, pubsub: Any, queue: SimpleQueue[Any]) -> None:
        # Wait for every confirmation so that, once ready, nothing published is missed.
        adapter = self._adapter
        if adapter.channels:
            pubsub.subscribe(*adapter.channels)
        if adapter.patterns:
            pubsub.psubscribe(*adapter.patterns)
        expected = len(adapter.channels) + len(adapter.patterns)
        deadline = time.monotonic() + 10
        while expected:
            response = pubsub.parse_response(block=False, timeout=_POLL)
            if response is None:
                if time.monotonic() > deadline:
                    raise redis.TimeoutError("Redis did not confirm the subscription in 10 s")
                continue
            if response[0] in (b"message", b"pmessage"):
                queue.put(response)
            else:
                pubsub.handle_message(response)
                if response[0] in (b"subscribe", b"psubscribe"):
                    expected -= 1

    def _read(self, pubsub: Any, queue: SimpleQueue[Any]) -> None:
        # The reader thread: parses every response and queues the messages, until
        # every subscription is gone (after stop) or the connection fails. With health
        # checks on, it wakes every interval so that redis-py can PING the server, and
        # declares the connection dead when a PING got no reply within an interval.
        put = queue.put
        parse = pubsub.parse_response
        interval = self._adapter.health_check_interval
        connection = pubsub.connection
        try:
            while True:
                response = parse(block=not interval, timeout=interval)
                if response is None:  # nothing within the interval, or a PING's reply
                    if interval and time.monotonic() > connection.next_health_check + 2 * interval:
                        raise redis.ConnectionError(
                            f"no reply from Redis to a health check within {2 * interval} s"
                        )
                    continue
                kind = response[0]
                if kind == b"message" or kind == b"pmessage":
                    put(response)
                    continue
                pubsub.handle_message(response)  # keeps redis-py's subscription state
                if not pubsub.subscribed:
                    put(_END)
                    return
        except Exception as exc:  # handed to the loop's thread, which decides
            put(exc)
