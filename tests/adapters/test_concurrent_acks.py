"""Exact acks with many messages in flight, on the real brokers: nothing still being
handled is ever acked, whatever finished after it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import missive
from missive.testing.conformance import Harness, running, wait_until
from tests.adapters.test_rabbitmq import open_harness
from tests.conformance.redis_harness import RedisStreamsHarness
from tests.services import require


@pytest.fixture(params=["rabbitmq-classic", "rabbitmq-quorum", "redis-streams"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "redis-streams":
        require("redis")
        streams = RedisStreamsHarness()
        yield streams
        streams.close()
    else:
        yield from open_harness(request.param.split("-")[1])


def test_a_message_still_running_stays_unacked_while_later_ones_are_acked(
    harness: Harness,
) -> None:
    # Given three messages, the first of which is handled until the test releases it
    release = threading.Event()
    handled: list[bytes] = []
    processor: missive.Processor[missive.RawMessage] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def handle(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        if message.raw_data == b"first":
            assert release.wait(30)
        handled.append(message.raw_data)
        ctx.ack()

    harness.publish([b"first", b"second", b"third"])
    # When an adapter with concurrency 4 has handled the two others
    with running(harness.adapter(missive.RawMessage, processor, concurrency=4)):
        wait_until(lambda: len(handled) == 2, "the second and third are handled")
        # Then the broker holds the first alone: the others' acks did not cover it
        wait_until(lambda: harness.remaining() == 1, "the two finished messages are acked")
        assert harness.remaining() == 1
        # And once it finishes, it is acked too
        release.set()
        wait_until(lambda: harness.remaining() == 0, "the first is acked")
    assert sorted(handled) == [b"first", b"second", b"third"]
