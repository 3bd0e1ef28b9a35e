"""RedisPubSubAdapter: Redis Pub/Sub channels and patterns, at-most-once.

Private: import it from :mod:`missive.adapters.redis`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable

from missive._typing import M
from missive.adapters._redis_common import (
    RedisAdapterBase,
)
from missive.adapters._redis_pubsub_transport import PubSubTransport
from missive.processor import Processor
from missive.runtime.transport import Transport

__all__ = ["DEFAULT_CHANNEL", "RedisPubSubAdapter"]

logger = logging.getLogger("missive.adapters.redis")

#: The channel :class:`RedisPubSubAdapter` subscribes to when given none.
DEFAULT_CHANNEL = "missive"


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
    * a dropped connection is logged and re-established, after waits that grow
      with each failure in a row; messages published in between are missed.

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
    :param concurrency: how many messages are handled at once (see
        :class:`~missive.Adapter`); 1 by default: one at a time, in order.
    :param ordering_key: ``message -> hashable``: equal keys are handled one at a time.
    :param graceful_timeout: on a stop, the seconds messages in flight get to finish.
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

    def transport(self) -> Transport:
        """A new Pub/Sub transport for :meth:`run`; see the class docstring."""
        return PubSubTransport(self)
