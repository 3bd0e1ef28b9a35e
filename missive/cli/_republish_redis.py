"""Publishing dead letters back to a Redis stream, each confirmed (``replay --to-broker``).

A letter is added to its stream with ``XADD`` (the reply, its new entry id, is the
confirmation) in the form of the adapter's retried copies, so that it keeps its id:
the message's bytes in ``--stream-field`` (``data``, the adapter's default; the DLQ
does not store the field's name), its other fields, ``x-missive-id`` (its id),
``x-missive-group`` (the consumer group that dead-lettered it: the only one that
handles it again) and ``x-missive-replays``. The attempt state of earlier retries is
left behind: a replay starts afresh.

``XADD`` is sent with ``NOMKSTREAM``: a stream deleted since is not made again, and
a stream without the letter's group is not written to, since no one would read the
letter; either keeps it in the DLQ.

Imported only by a replay to a ``redis://`` URL; redis-py is imported here, so a
missing extra is reported then.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from missive.cli._common import CLIError, redact
from missive.cli._replay_loop import RefusedError
from missive.cli._republish import REPLAYS, original_id
from missive.dlq import DeadLetter
from missive.errors import MissingExtraError

try:
    import redis
    import redis.exceptions
except ImportError as _exc:
    raise MissingExtraError("redis", "missive dlq replay --to-broker redis://") from _exc

from missive.adapters._redis_delays import DELIVERIES_FIELD, GROUP_FIELD, ID_FIELD, PREFIX

__all__ = ["RedisPublisher", "connect"]


def connect(url: str, args: argparse.Namespace) -> RedisPublisher:
    """A publisher on the Redis server at ``url``.

    :raises CLIError: if it cannot connect.
    """
    return RedisPublisher(url, args.stream_field)


class RedisPublisher:
    """Adds dead letters back to their streams with ``XADD``.

    :param field: the entry field for the message's bytes.
    :raises CLIError: if the server cannot be reached.
    """

    def __init__(self, url: str, field: str) -> None:
        self.url = url
        self.field = field.encode("utf-8")
        # Whether each (stream, group) has the group, asked once per replay.
        self._groups: dict[tuple[str, str], bool] = {}
        try:
            self.client = redis.Redis.from_url(url)
            self.client.ping()
        except (redis.exceptions.RedisError, OSError, ValueError) as exc:
            raise CLIError(
                f"cannot connect to Redis at {redact(url)!r} ({type(exc).__name__}); nothing sent"
            ) from None

    def publish(self, record: DeadLetter, replays: int) -> None:
        """``XADD`` ``record`` to its stream; return once Redis replied."""
        attributes = record.attributes
        stream, group = str(attributes["stream"]), str(attributes["group"])
        try:
            if not self._has_group(stream, group):
                raise RefusedError(f"stream {stream!r} has no consumer group {group!r} to read it")
            added = self.client.xadd(stream, fields(record, self.field, replays), nomkstream=True)
        except redis.exceptions.ResponseError as exc:
            raise RefusedError(f"Redis refused it: {str(exc).splitlines()[0]}") from None
        except (redis.exceptions.RedisError, OSError):
            raise CLIError(
                f"lost the connection to Redis at {redact(self.url)!r}; the letters "
                "confirmed so far are removed: run the same command again for the others"
            ) from None
        if added is None:
            self._groups.pop((stream, group), None)
            raise RefusedError(f"stream {stream!r} does not exist any more")

    def _has_group(self, stream: str, group: str) -> bool:
        key = (stream, group)
        if key not in self._groups:
            if not self.client.exists(stream):
                raise RefusedError(f"stream {stream!r} does not exist any more")
            names = {info["name"] for info in self.client.xinfo_groups(stream)}
            self._groups[key] = group.encode() in names or group in names
        return self._groups[key]

    def close(self) -> None:
        """Close the connection."""
        self.client.close()


def fields(record: DeadLetter, field: bytes, replays: int) -> dict[Any, Any]:
    """The entry's fields: the bytes, the letter's own fields, its id, group and count."""
    attributes = record.attributes
    entry: dict[Any, Any] = {field: record.message.raw_data}  # as xadd types it
    own = attributes.get("fields")
    if isinstance(own, Mapping):
        for name, value in own.items():
            key = str(name).encode("utf-8")
            if not key.startswith(PREFIX) and key != field:
                entry[key] = value if isinstance(value, bytes) else str(value).encode("utf-8")
    entry[ID_FIELD] = original_id(record)
    entry[DELIVERIES_FIELD] = b"0"
    entry[GROUP_FIELD] = str(attributes["group"]).encode("utf-8")
    entry[REPLAYS.encode()] = b"%d" % replays
    return entry
