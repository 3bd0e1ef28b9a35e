"""RabbitMQAdapter and poison messages: ``max_deliveries`` on quorum and classic queues."""

from __future__ import annotations

import itertools
import pathlib
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

import missive
from missive.testing.conformance.support import TIMEOUT, running, wait_until
from tests.adapters.test_rabbitmq import (
    URL,
    RabbitMQHarness,
    harness,  # noqa: F401 - fixture
    quorum_harness,  # noqa: F401 - fixture
)


def test_a_message_delivered_too_often_on_a_quorum_queue_is_dead_lettered(
    quorum_harness: RabbitMQHarness,  # noqa: F811
) -> None:
    # Given a quorum queue and a handler that always nacks, with max_deliveries=3
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    counts: list[int] = []

    @processor.handle_for(lambda m: True)
    def always_nack(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        counts.append(message.attributes["delivery_count"])
        ctx.nack()

    dlq: dict[bytes, tuple[missive.Message, str]] = {}
    processor.set_dlq(dlq)
    quorum_harness.publish([b"poison"])
    # When it is consumed
    with running(quorum_harness.adapter(missive.RawMessage, processor, max_deliveries=3)):
        wait_until(lambda: dlq, "the message is dead-lettered")
        wait_until(lambda: quorum_harness.remaining() == 0, "the message is acked")
    # Then the handler saw deliveries 1, 2 and 3, and the 4th went to the DLQ saying why
    assert counts == [1, 2, 3]
    [(_, reason)] = dlq.values()
    assert "delivered 4 times, more than max_deliveries=3" in reason


def test_a_classic_queue_message_nacked_too_often_is_dead_lettered_by_the_dlq_count(
    harness: RabbitMQHarness,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    # Given a classic queue, an SQLite DLQ, and a handler that always nacks
    from missive.dlq.sqlite import SQLiteDLQ

    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    deliveries: list[bytes] = []

    @processor.handle_for(lambda m: True)
    def always_nack(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        deliveries.append(message.message_id)
        ctx.nack()

    harness.publish([b"poison"])
    with SQLiteDLQ(str(tmp_path / "dlq.db")) as dlq:
        processor.set_dlq(dlq)
        # When it is consumed with max_deliveries=3
        with running(harness.adapter(missive.RawMessage, processor, max_deliveries=3)):
            wait_until(lambda: len(dlq) == 1, "the message is dead-lettered")
            wait_until(lambda: harness.remaining() == 0, "the message is acked")
        # Then it was handled 3 times, then dead-lettered saying so, its count forgotten
        record = dlq.record(f"{harness.queue}-1".encode())
        assert "delivered 4 times, more than max_deliveries=3" in record.reason
        assert dlq.record_attempt(record.message_id) == 1
    assert len(deliveries) == 3


def test_a_classic_queue_message_that_kills_its_worker_is_dead_lettered(
    harness: RabbitMQHarness,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    # Given a classic queue holding a message whose handler kills the process
    # (os._exit: no except runs), then a good message, and an SQLite DLQ
    harness.publish([b"kill", b"good"])
    dlq_path = tmp_path / "dlq.db"
    code = textwrap.dedent(
        f"""
        import os, missive
        from missive.adapters.rabbitmq import RabbitMQAdapter
        from missive.dlq.sqlite import SQLiteDLQ
        processor = missive.Processor()
        processor.set_dlq(SQLiteDLQ({str(dlq_path)!r}))
        adapter = RabbitMQAdapter(
            missive.RawMessage, processor, {harness.queue!r}, url={URL!r},
            max_deliveries=2, prefetch=1,
        )

        @processor.handle_for(lambda m: True)
        def handle(message, ctx):
            if message.raw_data == b"kill":
                os._exit(70)
            ctx.ack()
            adapter.stop()

        adapter.run()
        """
    )
    # When workers are restarted after each crash, as a supervisor does
    statuses = []
    for _ in range(5):
        worker = subprocess.run([sys.executable, "-c", code], timeout=TIMEOUT, check=False)
        statuses.append(worker.returncode)
        if worker.returncode == 0:
            break
    # Then the first two deliveries killed a worker, the third was dead-lettered, and
    # the next worker handled the good message
    assert statuses == [70, 70, 0]
    from missive.dlq.sqlite import SQLiteDLQ

    with SQLiteDLQ(str(dlq_path)) as dlq:
        record = dlq.record(f"{harness.queue}-1".encode())
        assert "delivered 3 times, more than max_deliveries=2" in record.reason
    assert harness.remaining() == 0


def _publish_without_id(harness: RabbitMQHarness, body: bytes) -> None:  # noqa: F811
    harness.channel.basic_publish("", harness.queue, body)


def test_a_classic_queue_message_without_an_id_nacked_too_often_is_dead_lettered(
    harness: RabbitMQHarness,  # noqa: F811
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a classic queue, an SQLite DLQ, a handler that always nacks, and a
    # message published without a message_id
    from missive.dlq.sqlite import SQLiteDLQ

    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    deliveries: list[bytes] = []

    @processor.handle_for(lambda m: True)
    def always_nack(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        deliveries.append(message.message_id)
        ctx.nack()

    _publish_without_id(harness, b"poison")
    caplog.set_level("WARNING", logger="missive")
    with SQLiteDLQ(str(tmp_path / "dlq.db")) as dlq:
        processor.set_dlq(dlq)
        # When it is consumed with max_deliveries=3
        with running(harness.adapter(missive.RawMessage, processor, max_deliveries=3)):
            wait_until(lambda: len(dlq) == 1, "the message is dead-lettered")
            wait_until(lambda: harness.remaining() == 0, "the message is acked")
        # Then it was handled 3 times, then dead-lettered saying so
        [record] = [dlq.record(message_id) for message_id in dlq]
        assert "delivered 4 times, more than max_deliveries=3" in record.reason
    assert len(deliveries) == 3
    # And one WARNING said why the limit is approximate for it
    approximate = [r for r in caplog.records if "max_deliveries is approximate" in r.getMessage()]
    assert len(approximate) == 1
    assert "poison" not in approximate[0].getMessage()


def test_a_message_nacked_again_and_again_is_requeued_after_a_growing_delay(
    harness: RabbitMQHarness,  # noqa: F811
) -> None:
    # Given a classic queue without a DLQ (no count) and a handler that always nacks
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    times: list[float] = []

    @processor.handle_for(lambda m: True)
    def always_nack(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        times.append(time.monotonic())
        ctx.nack()

    _publish_without_id(harness, b"nacked")
    # When it is consumed for a second, with retry_delay=0.1
    with running(harness.adapter(missive.RawMessage, processor, retry_delay=0.1)):
        time.sleep(1.0)
    # Then it came back a few times (not thousands), each after a delay
    assert 2 <= len(times) <= 10, f"{len(times)} deliveries in a second"
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 0.09 for gap in gaps)


def test_the_requeue_delay_doubles_with_the_counted_redeliveries(
    harness: RabbitMQHarness,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    # Given a classic queue, an SQLite DLQ that counts, and a handler that always nacks
    from missive.dlq.sqlite import SQLiteDLQ

    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    times: list[float] = []

    @processor.handle_for(lambda m: True)
    def always_nack(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        times.append(time.monotonic())
        ctx.nack()

    harness.publish([b"nacked"])
    with SQLiteDLQ(str(tmp_path / "dlq.db")) as dlq:
        processor.set_dlq(dlq)
        # When it is nacked four times with retry_delay=0.05
        adapter = harness.adapter(missive.RawMessage, processor, retry_delay=0.05)
        with running(adapter):
            wait_until(lambda: len(times) >= 4, "four deliveries")
    # Then the waits were about 0.05, 0.1 and 0.2 s: each about twice the one before
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[0] >= 0.045, gaps
    assert gaps[1] >= 0.09, gaps
    assert gaps[2] >= 0.18, gaps
    assert gaps[2] > gaps[0] * 2
