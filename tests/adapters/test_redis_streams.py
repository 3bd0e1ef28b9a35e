"""RedisStreamsAdapter against the real Redis on 127.0.0.1:6379: the suite, then specifics.

Each test uses its own stream and group (random suffix), deleted afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.adapter_suite import AdapterSuite
from tests.conformance.redis_harness import RedisStreamsHarness
from tests.services import require


@pytest.fixture
def harness() -> Iterator[RedisStreamsHarness]:
    require("redis")
    h = RedisStreamsHarness()
    yield h
    h.close()


class TestRedisStreamsConformance(AdapterSuite):
    """Every test of the adapter suite, on Redis Streams."""
