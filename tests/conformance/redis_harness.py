"""The conformance harnesses for Redis Pub/Sub and Redis Streams, on 127.0.0.1:6379.

Each harness owns one channel or stream (and group) with a random suffix, names its
adapters' connections so that ``kill_connections`` (CLIENT KILL) finds them, and
deletes what it created in ``close``. Options tuned for fast tests: short blocking
reads, a 300 ms claim timeout, reconnections within half a second.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterable
from typing import Any

import pytest
import redis

import missive
from missive.adapters._redis_delays import delayed_key
from missive.adapters.redis import RedisPubSubAdapter, RedisStreamsAdapter
from missive.testing.conformance.harness import (
    CONSUMER_GROUPS,
    DELAYED_RETRY,
    EXTERNAL_PUBLISHER,
    KILL_CONNECTION,
    PATTERNS,
    PERSISTENCE,
    REDELIVERY,
)

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
#: The claim timeout the Streams harness gives its adapters, in milliseconds.
CLAIM_IDLE_MS = 300


def redis_cli(*args: str, stdin: bytes) -> None:
    """Run ``redis-cli -u URL -x ARGS``: the last argument is ``stdin``, byte for byte."""
    if shutil.which("redis-cli") is None:
        problem = "redis-cli is not installed: apt-get install redis-tools"
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    subprocess.run(
        ["redis-cli", "-u", URL, "-x", *args],
        input=stdin,
        check=True,
        timeout=30,
        capture_output=True,
    )


class _RedisHarness:
    name = "redis"

    def __init__(self) -> None:
        self.suffix = uuid.uuid4().hex[:12]
        #: The CLIENT SETNAME of this test's adapters.
        self.client_name = f"missive-test-{self.suffix}"
        self.client = redis.Redis.from_url(URL)

    def kill_connections(self) -> None:
        ids = [c["id"] for c in self.client.client_list() if c.get("name") == self.client_name]
        assert ids, f"no connection named {self.client_name!r} to kill"
        for client_id in ids:
            self.client.client_kill_filter(_id=client_id)

    def _close(self, *keys: str) -> None:
        try:
            if keys:
                self.client.delete(*keys)
        finally:
            self.client.close()


class RedisPubSubHarness(_RedisHarness):
    """Redis Pub/Sub on one channel ``missive-test-<suffix>``: nothing persists."""

    name = "redis-pubsub"
    capabilities = frozenset({KILL_CONNECTION, EXTERNAL_PUBLISHER, PATTERNS})

    def __init__(self) -> None:
        super().__init__()
        self.channel = f"missive-test-{self.suffix}"

    def adapter(
        self, message_cls: type[missive.Message], processor: missive.Processor[Any], **options: Any
    ) -> RedisPubSubAdapter[Any]:
        options.setdefault("url", URL)
        options.setdefault("client_name", self.client_name)
        options.setdefault("max_reconnect_delay", 0.5)
        if "patterns" not in options:
            options.setdefault("channels", self.channel)
        return RedisPubSubAdapter(message_cls, processor, **options)

    def publish(self, bodies: Iterable[bytes]) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for body in bodies:
                pipe.publish(self.channel, body)
                if len(pipe) >= 1000:
                    pipe.execute()
            pipe.execute()

    def publish_external(self, body: bytes) -> None:
        redis_cli("PUBLISH", self.channel, stdin=body)

    def remaining(self) -> int:
        return 0  # Pub/Sub holds nothing

    def close(self) -> None:
        self._close()


class RedisStreamsHarness(_RedisHarness):
    """A stream ``missive-test-<suffix>`` read in the group ``group-<suffix>``, and the
    group's sorted set of delayed retries."""

    name = "redis-streams"
    capabilities = frozenset(
        {
            REDELIVERY,
            PERSISTENCE,
            CONSUMER_GROUPS,
            KILL_CONNECTION,
            EXTERNAL_PUBLISHER,
            DELAYED_RETRY,
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.stream = f"missive-test-{self.suffix}"
        self.group = f"group-{self.suffix}"
        #: The sorted set of the group's delayed retries.
        self.delayed = delayed_key(self.stream, self.group)

    def adapter(
        self, message_cls: type[missive.Message], processor: missive.Processor[Any], **options: Any
    ) -> RedisStreamsAdapter[Any]:
        options.setdefault("url", URL)
        options.setdefault("group", self.group)
        options.setdefault("client_name", self.client_name)
        options.setdefault("block_ms", 50)
        options.setdefault("claim_idle_ms", CLAIM_IDLE_MS)
        options.setdefault("max_reconnect_delay", 0.5)
        return RedisStreamsAdapter(message_cls, processor, self.stream, **options)

    def publish(self, bodies: Iterable[bytes]) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for body in bodies:
                pipe.xadd(self.stream, {"data": body})
                if len(pipe) >= 1000:
                    pipe.execute()
            pipe.execute()

    def publish_external(self, body: bytes) -> None:
        redis_cli("XADD", self.stream, "*", "data", stdin=body)

    def remaining(self) -> int:
        """Entries the group has not acked (pending, plus not yet delivered: lag), and
        the retries waiting in the delayed set."""
        waiting = int(self.client.zcard(self.delayed))
        if not self.client.exists(self.stream):
            return waiting
        for group in self.client.xinfo_groups(self.stream):
            if group["name"] == self.group.encode():
                return int(group["pending"]) + int(group["lag"] or 0) + waiting
        return int(self.client.xlen(self.stream)) + waiting

    def pending(self) -> list[dict[str, Any]]:
        """The group's pending entries (id, consumer, idle time, delivery count)."""
        return list(self.client.xpending_range(self.stream, self.group, "-", "+", 10_000))

    def close(self) -> None:
        self._close(self.stream, self.delayed)
