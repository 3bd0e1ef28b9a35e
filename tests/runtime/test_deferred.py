"""Dead letters stored a batch at a time before their acks (missive.runtime.deferred),
on real brokers: one write for many failures, and nothing lost when that write fails."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import missive
from missive.dlq.sqlite import SQLiteDLQ
from missive.testing.conformance.support import RecordingObserver, running, wait_until
from tests.adapters.test_backlog import harness  # noqa: F401 - fixture: RabbitMQ, Redis Streams


class CountingDLQ(SQLiteDLQ):
    """An SQLite DLQ that records the size of each put_many, and can refuse the first."""

    def __init__(self, path: Path, refuse_first: bool = False) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.refuse = refuse_first

    def put_many(self, entries: Sequence[tuple[bytes, tuple[missive.Message, str]]]) -> None:
        if self.refuse:
            self.refuse = False
            raise missive.DLQError("the disk is full (a test)")
        super().put_many(entries)
        self.batches.append(len(entries))


def failing(dlq: SQLiteDLQ) -> missive.Processor[missive.RawMessage]:
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    processor.set_dlq(dlq)

    @processor.handle_for(lambda m: True)
    def broken(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        raise ValueError("a bad deploy")

    return processor


def test_the_dead_letters_of_a_batch_are_stored_in_one_write(
    harness: Any,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # Given a handler that fails on every message, and 200 messages waiting
    dlq = CountingDLQ(tmp_path / "dlq.db")
    harness.publish([b"m%d" % i for i in range(200)])
    adapter = harness.adapter(missive.RawMessage, failing(dlq))
    observer = adapter.add_observer(RecordingObserver())
    # When they are consumed
    with running(adapter):
        wait_until(lambda: harness.remaining() == 0, "every message is settled")
    # Then every one is stored, in far fewer writes than messages, each before its ack
    assert len(dlq) == 200
    assert sum(dlq.batches) == 200
    assert len(dlq.batches) < 50
    for message_id in set(observer.message_ids()):
        assert observer.events(message_id)[-2:] == ["dead_lettered", "acked"]
    dlq.close()


def test_a_batch_whose_write_fails_is_not_acked_and_comes_again(
    harness: Any,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # Given a DLQ whose first batch write fails, and 20 failing messages
    dlq = CountingDLQ(tmp_path / "dlq.db", refuse_first=True)
    harness.publish([b"m%d" % i for i in range(20)])
    options = {"retry_delay": 0.05} if hasattr(harness, "queue") else {}
    adapter = harness.adapter(missive.RawMessage, failing(dlq), **options)
    observer = adapter.add_observer(RecordingObserver())
    # When they are consumed
    with running(adapter):
        wait_until(lambda: len(dlq) == 20, "every message is stored in the end")
        wait_until(lambda: harness.remaining() == 0, "every message is settled")
    # Then the refused batch's messages were given back, not acked, and stored later
    failed = {args[0].message_id for args in observer.arguments("dlq_write_failed")}
    assert failed
    for message_id in failed:
        events = observer.events(message_id)
        assert events.index("dlq_write_failed") < events.index("requeued")
        assert events[-2:] == ["dead_lettered", "acked"]
        assert "acked" not in events[: events.index("requeued")]
    dlq.close()
