"""RedisPubSubAdapter against the real Redis on 127.0.0.1:6379: the suite, then specifics.

Each test uses its own channel (random suffix).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.adapter_suite import AdapterSuite
from tests.conformance.redis_harness import RedisPubSubHarness
from tests.services import require


@pytest.fixture
def harness() -> Iterator[RedisPubSubHarness]:
    require("redis")
    h = RedisPubSubHarness()
    yield h
    h.close()


class TestRedisPubSubConformance(AdapterSuite):
    """Every test of the adapter suite, on Redis Pub/Sub."""
