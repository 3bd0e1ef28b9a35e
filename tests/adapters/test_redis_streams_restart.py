"""RedisStreamsAdapter when its Redis restarts, on a redis-server of the test's own.

The shared Redis is never restarted: each test starts one on a free loopback port
(``tests/faults/redis_server.py``), in its own directory, and stops it afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import missive
from missive.adapters.redis import RedisStreamsAdapter
from missive.testing.conformance.support import Recorder, running, wait_until
from tests.faults.redis_server import RedisServer, require_redis_server


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own that keeps nothing on disk."""
    require_redis_server()
    with RedisServer(tmp_path, appendonly=False) as server:
        yield server


def test_a_group_lost_in_a_restart_is_created_again_with_a_warning_naming_it(
    volatile_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an adapter that has handled an entry, on a Redis that keeps nothing on disk
    client = redis.Redis.from_url(volatile_redis.url)
    recorder = Recorder()
    adapter = RedisStreamsAdapter(
        missive.RawMessage,
        recorder.processor,
        "orders",
        group="billing",
        url=volatile_redis.url,
        block_ms=50,
        max_reconnect_delay=0.2,
    )
    caplog.set_level(logging.WARNING, "missive.adapters.redis")
    with running(adapter):
        client.xadd("orders", {"data": b"before"})
        wait_until(lambda: recorder.count() == 1, "the first entry is handled")
        # When Redis restarts, losing the stream and its group
        volatile_redis.restart(down=0.2)
        wait_until(lambda: client.exists("orders"), "the adapter created the stream again")
        client.xadd("orders", {"data": b"after"})
        wait_until(lambda: recorder.count() == 2, "the entry added after the restart is handled")
    client.close()
    # Then a warning says the group was gone, and how to keep it next time
    warnings = [r.getMessage() for r in caplog.records if "was gone" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "stream 'orders' group 'billing' was gone when reconnecting" in warnings[0]
    assert "appendonly" in warnings[0]
