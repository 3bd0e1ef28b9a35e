"""RedisPubSubAdapter: Redis Pub/Sub channels and patterns, at-most-once.

Private: import it from :mod:`missive.adapters.redis`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from queue import Empty, SimpleQueue
from typing import Any

import redis

from missive._typing import M
from missive.adapters._redis_common import (
    CONNECTION_ERRORS,
    RedisAdapterBase,
    redact,
)
from missive.context import Outcome, ProcessingContext
from missive.errors import DLQWriteError, HandlingError
from missive.processor import Processor

__all__ = ["DEFAULT_CHANNEL", "RedisPubSubAdapter"]

logger = logging.getLogger("missive.adapters.redis")

#: The channel :class:`RedisPubSubAdapter` subscribes to when given none.
DEFAULT_CHANNEL = "missive"

_NACKED = Outcome.NACKED
_POLL = 0.2  # seconds between looks at stop() while idle
_END = object()  # the reader's last item: every subscription is confirmed gone


class RedisPubSubAdapter(RedisAdapterBase[M]):
    """Consumes Redis Pub/Sub channels and patterns: **at-most-once** delivery.

    Redis Pub/Sub keeps nothing: a message published while the adapter is not
    subscribed (not yet started, stopped, or reconnecting after a dropped connection)
    is never seen, and a received message cannot be given back. Hence:

    * a **nacked** message is dead-lettered, with a reason saying Pub/Sub cannot
      redeliver, rather than dropped;
    * a message that cannot be handled and cannot be dead-lettered (no DLQ set, or
      the DLQ write failed) is logged at ERROR with its id and the adapter goes on:
      it is lost, as Pub/Sub cannot redeliver it;
    * a dropped connection is logged and re-established with backoff; messages
      published in between are missed.

    Messages get a generated id and the attributes ``channel`` (and ``pattern`` for
    a pattern subscription). A reader thread drains the socket into a local queue so
    that a burst never fills Redis's output buffer for this client (Redis drops a
    subscriber whose buffer passes ``client-output-buffer-limit pubsub``, 32 MB by
    default); handlers run one at a time in the thread that called :meth:`run`.

    :meth:`stop` (or SIGINT/SIGTERM) unsubscribes, then handles what Redis sent
    before the unsubscribe took effect, for up to ``drain_timeout`` seconds; what is
    still buffered after that is dead-lettered with a reason saying so.

    :param message_cls: the message class to build each message with.
    :param processor: the processor to run.
    :param channels: a channel name or names to subscribe to; when neither
        ``channels`` nor ``patterns`` is given, the channel ``"missive"``.
    :param patterns: a glob-style pattern or patterns to subscribe to (PSUBSCRIBE).
    :param url: the Redis URL; default ``REDIS_URL``, else ``redis://127.0.0.1:6379/0``.
    :param drain_timeout: seconds spent on buffered messages after a stop.
    :param health_check_interval: seconds of silence after which redis-py pings the
        server; with no reply two intervals later the connection is taken as dead and
        re-established. 0 turns health checks off.
    :param max_reconnect_delay: the longest wait, in seconds, between reconnections.
    :param client_name: the name its connections give themselves (CLIENT SETNAME), as
        shown by CLIENT LIST.
    :raises ValueError: if a channel or pattern list is empty or a number is negative.
    """

    def __init__(
        self,
        message_cls: type[M],
        processor: Processor[M],
        channels: str | Iterable[str] | None = None,
        *,
        patterns: str | Iterable[str] = (),
        url: str | None = None,
        drain_timeout: float = 5.0,
        health_check_interval: int = 30,
        max_reconnect_delay: float = 10.0,
        client_name: str | None = None,
    ) -> None:
        super().__init__(message_cls, processor, url, max_reconnect_delay, client_name)
        pattern_list = [patterns] if isinstance(patterns, str) else list(patterns)
        if channels is None:
            channel_list = [] if pattern_list else [DEFAULT_CHANNEL]
        else:
            channel_list = [channels] if isinstance(channels, str) else list(channels)
            if not channel_list and not pattern_list:
                raise ValueError("give at least one channel or pattern to subscribe to")
        if drain_timeout < 0 or health_check_interval < 0:
            raise ValueError("drain_timeout and health_check_interval must not be negative")
        #: The channels subscribed to.
        self.channels: tuple[str, ...] = tuple(channel_list)
        #: The patterns subscribed to.
        self.patterns: tuple[str, ...] = tuple(pattern_list)
        self.drain_timeout = drain_timeout
        self.health_check_interval = health_check_interval

    def run(self) -> None:
        """Subscribe and handle messages until :meth:`stop`; see the class docstring."""
        names = ", ".join([*self.channels, *(f"pattern {p}" for p in self.patterns)])
        describe = f"Pub/Sub {names} at {redact(self.url)}"
        with self.processor.context() as context:
            self._run_reconnecting(lambda: self._consume(context), describe)
        logger.info("Pub/Sub adapter stopped")

    def _consume(self, context: ProcessingContext[M]) -> None:
        client = self._client(health_check_interval=self.health_check_interval)
        pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        queue: SimpleQueue[Any] = SimpleQueue()
        reader: threading.Thread | None = None
        try:
            self._subscribe(pubsub, queue)
            reader = threading.Thread(
                target=self._read, args=(pubsub, queue), name="missive-redis-pubsub", daemon=True
            )
            reader.start()
            self._consuming = True
            logger.info(
                "subscribed to %d channel(s) and %d pattern(s) at %s",
                len(self.channels),
                len(self.patterns),
                redact(self.url),
            )
            self._set_ready()
            self._process(context, pubsub, queue)
        finally:
            pubsub.close()  # shuts the socket down: a reader still blocked in it ends
            if reader is not None:
                reader.join(5)
            client.close()

    def _subscribe(self, pubsub: Any, queue: SimpleQueue[Any]) -> None:
        # Wait for every confirmation so that, once ready, nothing published is missed.
        if self.channels:
            pubsub.subscribe(*self.channels)
        if self.patterns:
            pubsub.psubscribe(*self.patterns)
        expected = len(self.channels) + len(self.patterns)
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
        interval = self.health_check_interval
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
        except Exception as exc:  # handed to the processing thread, which decides
            put(exc)

    def _process(self, context: ProcessingContext[M], pubsub: Any, queue: SimpleQueue[Any]) -> None:
        get = queue.get
        handle = self._handle
        stop_requested = self.stop_event.is_set
        while not stop_requested():
            try:
                item = get(timeout=_POLL)
            except Empty:
                continue
            if item.__class__ is list:
                handle(context, item)
            elif item is _END:
                return
            else:
                raise item
        self._drain(context, pubsub, queue)

    def _drain(self, context: ProcessingContext[M], pubsub: Any, queue: SimpleQueue[Any]) -> None:
        try:
            pubsub.unsubscribe()
            pubsub.punsubscribe()
        except CONNECTION_ERRORS:
            pass  # the reader sees the failure too, and queues it
        deadline = time.monotonic() + self.drain_timeout
        handled = 0
        while True:
            left = deadline - time.monotonic()
            try:
                item = queue.get(timeout=left) if left > 0 else queue.get_nowait()
            except Empty:
                break
            if item.__class__ is not list:
                if item is not _END:
                    logger.warning("connection failed while stopping: %s", item)
                logger.info("handled %d messages received before the unsubscribe", handled)
                return
            if left > 0:
                self._handle(context, item)
                handled += 1
            else:
                self._dead_letter(
                    context,
                    self._message(item),
                    "the adapter stopped before "
                    f"handling it (drain_timeout={self.drain_timeout} s passed); "
                    "Redis Pub/Sub cannot redeliver a message",
                )
        logger.warning(
            "stopped after drain_timeout=%s s with the subscription still open; messages "
            "Redis sends after this point are not received",
            self.drain_timeout,
        )

    def _message(self, response: list[bytes]) -> M:
        if len(response) == 3:
            attributes = {"channel": response[1].decode("utf-8", "replace")}
        else:
            attributes = {
                "channel": response[2].decode("utf-8", "replace"),
                "pattern": response[1].decode("utf-8", "replace"),
            }
        return self.message_cls(response[-1], None, attributes)

    def _handle(self, context: ProcessingContext[M], response: list[bytes]) -> None:
        message = self._message(response)
        try:
            outcome = context.process(message)
        except (HandlingError, DLQWriteError) as exc:
            self._lost(message, exc)
            return
        if outcome is _NACKED:
            self._dead_letter(
                context, message, "nacked by its handler; Redis Pub/Sub cannot redeliver a message"
            )

    def _dead_letter(self, context: ProcessingContext[M], message: M, reason: str) -> None:
        try:
            context.dead_letter(message, reason)
        except (HandlingError, DLQWriteError) as exc:
            self._lost(message, exc)

    @staticmethod
    def _lost(message: M, exc: HandlingError | DLQWriteError) -> None:
        logger.error(
            "message %r (%d bytes, channel %s) was not handled and is lost, as Redis Pub/Sub "
            "cannot redeliver it: %s",
            message.message_id,
            len(message.raw_data),
            message.attributes.get("channel"),
            exc,
        )
