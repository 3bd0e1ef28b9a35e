"""What both Redis adapters share: defaults, the URL, connecting, what a fault means.

Private: the public names live in :mod:`missive.adapters.redis`, which imports redis-py
first (raising :class:`~missive.MissingExtraError` without it) and then this module.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from missive._typing import M
from missive.adapters.base import Adapter
from missive.processor import Processor
from missive.runtime.transport import Fault, Transport

__all__ = [
    "CONNECTION_ERRORS",
    "DEFAULT_URL",
    "RedisAdapterBase",
    "RedisTransportBase",
    "consumer_name",
    "default_url",
    "make_client",
    "redact",
    "redis_fault",
    "unblock_soon",
]

logger = logging.getLogger("missive.adapters.redis")

#: The errors that mean the connection failed: reconnect and go on.
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError)
_NO_RETRY = Retry(NoBackoff(), 0)  # failures surface at once, for the caller to log

#: Where the adapters connect when neither ``url`` nor ``REDIS_URL`` says otherwise.
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def default_url(url: str | None) -> str:
    """``url`` if given, else the ``REDIS_URL`` environment variable, else the local Redis."""
    if url is not None:
        return url
    return os.environ.get("REDIS_URL") or DEFAULT_URL


def consumer_name() -> str:
    """A consumer name unique to this process: ``<host>-<pid>-<random>``."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


def redact(url: str) -> str:
    """``url`` without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.partition(":")[0]
    return f"{scheme}://{user + ':***' if user else '***'}@{host}"


def make_client(
    url: str,
    client_name: str | None,
    on_connect: Callable[[], None] | None = None,
    **options: Any,
) -> redis.Redis:
    """A client for ``url`` that never retries: a failure reaches the caller at once.

    ``on_connect`` is called after each connection the client makes, the first and
    any it makes again by itself (redis-py replaces a pooled connection the server
    dropped while it was idle, without an error).
    """
    if on_connect is not None:

        def connected(connection: Any) -> None:
            connection.on_connect()
            on_connect()

        options["redis_connect_func"] = connected
    return redis.Redis.from_url(
        url,
        retry=_NO_RETRY,
        socket_connect_timeout=5,
        socket_keepalive=True,
        client_name=client_name,
        **options,
    )


def unblock_soon(url: str, client_name: str | None, client_id: int) -> None:
    """CLIENT UNBLOCK ``client_id`` from a short-lived thread and connection, best effort.

    Safe from a signal handler: it only starts the thread.
    """

    def unblock() -> None:
        try:
            with make_client(url, client_name) as client:
                client.client_unblock(client_id)
        except redis.RedisError as exc:
            logger.debug("could not wake a blocked read up: %s", exc)

    threading.Thread(target=unblock, name="missive-redis-unblock", daemon=True).start()


def redis_fault(exc: BaseException) -> Fault:
    """RECONNECT for a failed or lost connection, FATAL for any other error."""
    return Fault.RECONNECT if isinstance(exc, CONNECTION_ERRORS) else Fault.FATAL


class RedisTransportBase(Transport):
    """What both Redis transports share: their name in logs, backoff start, faults."""

    system = "redis"
    broker_name = "Redis"
    first_reconnect_delay = 0.05

    def fault(self, exc: BaseException) -> Fault:
        """Reconnect on a connection error; stop with any other."""
        return redis_fault(exc)


class RedisAdapterBase(Adapter[M]):
    """What both Redis adapters share: the URL, the client name, the reconnection cap."""

    def __init__(
        self,
        message_cls: type[M],
        processor: Processor[M],
        url: str | None,
        max_reconnect_delay: float,
        client_name: str | None,
        **options: Any,
    ) -> None:
        super().__init__(message_cls, processor, **options)
        if max_reconnect_delay < 0:
            raise ValueError("max_reconnect_delay must not be negative")
        #: The Redis URL connected to.
        self.url = default_url(url)
        self.max_reconnect_delay = max_reconnect_delay
        self.client_name = client_name

    def _client(self, **options: Any) -> redis.Redis:
        return make_client(self.url, self.client_name, **options)
