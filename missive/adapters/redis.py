"""Redis adapters: :class:`RedisPubSubAdapter` (at-most-once) and :class:`RedisStreamsAdapter`.

Needs the optional dependency ``missive[redis]`` (redis-py); importing this module
without it raises :class:`~missive.MissingExtraError`. Both adapters connect to
``url``, else the ``REDIS_URL`` environment variable, else
``redis://127.0.0.1:6379/0``. See ``docs/redis.md``.
"""

from __future__ import annotations

from missive.errors import MissingExtraError

try:
    import redis  # noqa: F401 - imported first so that a missing extra is reported clearly
except ImportError as _exc:  # pragma: no cover - depends on what is installed
    raise MissingExtraError("redis", "missive.adapters.redis") from _exc

from missive.adapters._redis_common import DEFAULT_URL
from missive.adapters._redis_pubsub import DEFAULT_CHANNEL, RedisPubSubAdapter
from missive.adapters._redis_streams import DEFAULT_GROUP, DEFAULT_STREAM, RedisStreamsAdapter

__all__ = [
    "DEFAULT_CHANNEL",
    "DEFAULT_GROUP",
    "DEFAULT_STREAM",
    "DEFAULT_URL",
    "RedisPubSubAdapter",
    "RedisStreamsAdapter",
]

# The public path, in reprs, docs and tracebacks.
RedisPubSubAdapter.__module__ = RedisStreamsAdapter.__module__ = __name__
