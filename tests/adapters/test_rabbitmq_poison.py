"""RabbitMQAdapter and poison messages: ``max_deliveries`` on quorum and classic queues."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap
from typing import Any

import missive
from tests.adapters.test_rabbitmq import (
    URL,
    RabbitMQHarness,
    harness,  # noqa: F401 - fixture
    quorum_harness,  # noqa: F401 - fixture
)
from tests.conformance.support import TIMEOUT, running, wait_until


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
