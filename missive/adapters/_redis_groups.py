"""The consumer-group commands RedisStreamsAdapter's transport sends, besides reading.

Private, like the rest of the Redis adapters: imported only after redis-py.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

__all__ = ["Entry", "StreamGroup"]

logger = logging.getLogger("missive.adapters.redis")

#: One stream entry as redis-py returns it: its id and its fields.
Entry = tuple[bytes, dict[bytes, bytes]]


class StreamGroup:
    """One consumer of a group on a stream: making the group, claiming, handing back.

    :param stream: the stream's key.
    :param group: the consumer group.
    :param consumer: this consumer's name in the group.
    :param start_id: where a group made here starts reading.
    :param claim_idle_ms: how long an entry stays pending before it is claimed.
    """

    __slots__ = ("claim_idle_ms", "consumer", "group", "start_id", "stream")

    def __init__(
        self, stream: str, group: str, consumer: str, start_id: str, claim_idle_ms: int
    ) -> None:
        self.stream, self.group, self.consumer = stream, group, consumer
        self.start_id = start_id
        self.claim_idle_ms = claim_idle_ms

    def create(self, client: redis.Redis) -> bool:
        """Make the group (and the stream) if missing; whether it was missing."""
        try:
            client.xgroup_create(self.stream, self.group, id=self.start_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    def recreate(self, client: redis.Redis, exc: redis.ResponseError) -> None:
        """Make the group again if ``exc`` says it is gone; otherwise raise ``exc``."""
        # NOGROUP: no such stream or group; UNBLOCKED: the stream went while we waited.
        if not str(exc).rpartition("caused error: ")[2].startswith(("NOGROUP", "UNBLOCKED")):
            raise exc
        self.gone("while consuming")
        self.create(client)

    def gone(self, when: str) -> None:
        """Warn that the group had to be made again, and what that means."""
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

    def claim(self, client: redis.Redis, cursor: Any) -> tuple[Any, list[Entry], list[int] | None]:
        """Claim the next entry idle for ``claim_idle_ms``: (cursor, entries, counts).

        The counts are the entries' delivery counts, this one included. An error
        saying the group is gone makes it again and returns no entry.
        """
        # One at a time: one of them may crash its worker, and every entry claimed with
        # it would have its delivery count raised by each crash, then be dead-lettered
        # as poison without ever being handled.
        try:
            cursor, claimed, *_ = client.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, cursor, count=1
            )
        except redis.ResponseError as exc:
            self.recreate(client, exc)
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

    def hand_back(self, client: redis.Redis, ids: list[Any], counts: list[int | None]) -> None:
        """Leave unstarted entries pending but idle, for any consumer to claim at once.

        Their delivery counts are set back by the delivery that did not happen.
        """
        by_count: dict[int, list[Any]] = {}
        for entry_id, count in zip(ids, counts, strict=True):
            by_count.setdefault(count or 1, []).append(entry_id)
        pipe = client.pipeline(transaction=False)
        for count, same in by_count.items():
            pipe.xclaim(
                self.stream,
                self.group,
                self.consumer,
                0,
                same,
                idle=self.claim_idle_ms,
                retrycount=count - 1,
                justid=True,
            )
        pipe.execute()
        logger.info("handed back %d unstarted entries of stream %r", len(ids), self.stream)

    def backlog(self, client: redis.Redis) -> int | None:
        """The group's lag (entries not yet delivered) plus its pending entries."""
        for group in client.xinfo_groups(self.stream):
            name = group["name"]
            if (name.decode() if isinstance(name, bytes) else name) == self.group:
                return int(group.get("lag") or 0) + int(group["pending"])
        return None

    def leave(self, client: redis.Redis) -> None:
        """Remove this consumer from the group if it holds no pending entry."""
        if not client.xpending_range(
            self.stream, self.group, "-", "+", 1, consumername=self.consumer
        ):
            client.xgroup_delconsumer(self.stream, self.group, self.consumer)
