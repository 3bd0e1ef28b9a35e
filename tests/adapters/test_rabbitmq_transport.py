"""The RabbitMQ transport's own verbs: how Acks settles, and hand_back on the real broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import missive
from missive.adapters._rabbitmq_acks import Acks
from missive.runtime.transport import Batch
from missive.testing.conformance.support import wait_until
from tests.adapters.test_rabbitmq import (
    RabbitMQHarness,
    harness,  # noqa: F401 - fixture
    quorum_harness,  # noqa: F401 - fixture
)


class FakeChannel:
    """Records what Acks sends; call_later keeps the timers for the test to run."""

    is_open = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bool]] = []
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.connection = self

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.sent.append(("ack", tag, multiple))

    def basic_nack(self, tag: int, requeue: bool = True) -> None:
        self.sent.append(("nack", tag, requeue))

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.timers.append((delay, callback))


def test_acks_are_one_multiple_ack_unless_a_delayed_requeue_is_pending() -> None:
    channel = FakeChannel()
    acks = Acks(channel)  # type: ignore[arg-type]
    acks.send([1, 2, 3])
    acks.requeue(4, 0.0)  # at once
    acks.requeue(5, 2.5)  # later: until then, a multiple ack would ack it too
    acks.send([6, 7])
    [(delay, nack_5)] = channel.timers
    nack_5()
    acks.send([8, 9])
    assert delay == 2.5
    assert channel.sent == [
        ("ack", 3, True),
        ("nack", 4, True),
        ("ack", 6, False),
        ("ack", 7, False),
        ("nack", 5, True),
        ("ack", 9, True),
    ]
    assert acks.owed == 0


def test_acks_behind_a_retry_in_flight_are_held_then_sent_with_its_original() -> None:
    # Given copies of deliveries 3 and 7 waiting for their commit
    channel = FakeChannel()
    acks = Acks(channel)  # type: ignore[arg-type]
    acks.pending.update({3, 7})
    # When the loop acks the deliveries around them, then the copies are committed
    acks.send([1, 2, 4, 5, 6, 8])
    sent_before_commit = list(channel.sent)
    acks.committed([3])
    acks.committed([7])
    # Then nothing passed an uncommitted original, and every ack was a multiple one
    assert sent_before_commit == [("ack", 2, True)]
    assert channel.sent == [("ack", 2, True), ("ack", 6, True), ("ack", 8, True)]
    assert acks.held == []
    assert acks.pending == set()


def test_an_original_committed_past_the_last_ack_is_acked_alone() -> None:
    # Given acks sent through delivery 4, and retries of 5 and 9 in flight
    channel = FakeChannel()
    acks = Acks(channel)  # type: ignore[arg-type]
    acks.send([1, 2, 3, 4])
    acks.pending.update({5, 9})
    # When 9's copy is committed first (concurrency), then 5's
    acks.committed([9])
    acks.committed([5])
    # Then each original is acked on its own: deliveries before it may be unsettled
    assert channel.sent == [("ack", 4, True), ("ack", 9, False), ("ack", 5, False)]


def test_hand_back_takes_nothing_more_and_gives_the_rows_back_after_the_acks(
    harness: RabbitMQHarness,  # noqa: F811
) -> None:
    # Given a transport holding prefetched rows, the first two handled and acked
    harness.publish([b"%d" % i for i in range(20)])
    adapter = harness.adapter(missive.RawMessage, missive.Processor(), prefetch=10)
    transport: Any = adapter.transport()
    transport.connect()
    try:
        wait_until(lambda: harness.ready() == 10, "the broker sent the prefetch")
        time.sleep(0.5)  # sent is not yet received: a receive takes what has arrived
        batch = transport.receive(100, 5.0)
        assert len(batch) == 10
        transport.ack(batch.handles[:2])
        # When the rest are handed back (a stop)
        transport.hand_back(batch, 2)
        # Then nothing more comes; they are rejected with the close, after the acks
        assert len(transport.receive(100, 0.2)) == 0
        assert harness.ready() == 10
    finally:
        transport.close()
    wait_until(lambda: harness.ready() == 18, "18 messages are ready")
    assert harness.remaining() == 18


def test_on_a_quorum_queue_no_ack_sent_after_a_hand_back_is_lost(
    quorum_harness: RabbitMQHarness,  # noqa: F811
) -> None:
    # A quorum queue keeps a channel's settlements while 32 of its commands are not
    # applied, and drops them if the channel closes first (RabbitMQ issue 10327): acks
    # sent just after 42 rejects, then the close, came back 17 times in 20.
    for _ in range(5):
        # Given 50 rows received, 8 of them still being handled when a stop comes
        quorum_harness.publish([b"%d" % i for i in range(50)])
        adapter = quorum_harness.adapter(missive.RawMessage, missive.Processor())
        transport: Any = adapter.transport()
        transport.connect()
        try:
            handles: list[int] = []
            while len(handles) < 50:
                handles += transport.receive(100, 5.0).handles
            # When the 42 others are handed back, then the 8 acked, then the close
            back = Batch()
            for handle in handles[8:]:
                back.add(b"", handle=handle)
            transport.hand_back(back, 0)
            transport.ack(handles[:8])
        finally:
            transport.close()
        # Then the broker holds the 42 handed back, not one acked message more
        wait_until(lambda: quorum_harness.remaining() == 42, "the 42 are back")
        quorum_harness.channel.queue_purge(quorum_harness.queue)
