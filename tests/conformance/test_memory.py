"""The adapter conformance suite against the in-memory broker and the test client.

It checks the suite itself: a test that fails here is wrong, not an adapter.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from missive.testing.conformance import AdapterSuite, EventsSuite, MemoryHarness, WithOptions


@pytest.fixture
def harness() -> Iterator[MemoryHarness]:
    h = MemoryHarness()
    yield h
    h.close()


class TestMemoryConformance(AdapterSuite, EventsSuite):
    """Every test of both suites, on the in-memory broker."""


class TestMemoryConcurrentConformance(AdapterSuite, EventsSuite):
    """Both suites again, with eight messages in flight."""

    @pytest.fixture
    def harness(self, harness: MemoryHarness) -> WithOptions:
        return WithOptions(harness, concurrency=8)
