"""The Adapter base class: a custom adapter, signals, and counting redeliveries."""

import os
import queue
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import missive
from missive.dlq.sqlite import SQLiteDLQ

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from queue_adapter import QueueAdapter, demo

Ctx = missive.HandlingContext[Any]


def test_the_documented_custom_adapter_runs() -> None:
    assert demo() == [b"1", b"2"]


def test_a_custom_adapter_puts_a_nacked_message_back() -> None:
    processor: missive.Processor[missive.Message] = missive.Processor()
    attempts: list[bytes] = []
    source: queue.Queue[tuple[bytes, bytes]] = queue.Queue()
    adapter = QueueAdapter(missive.RawMessage, processor, source)

    @processor.handle_for(lambda m: True)
    def flaky(message: missive.Message, ctx: Ctx) -> None:
        attempts.append(message.message_id)
        if len(attempts) == 1:
            ctx.nack()
        else:
            ctx.ack()
            adapter.stop()

    source.put((b"id-1", b"x"))
    adapter.run()
    assert attempts == [b"id-1", b"id-1"]
    assert adapter.done == [b"id-1"]


def test_a_message_that_cannot_be_handled_without_a_dlq_is_not_acked() -> None:
    processor: missive.Processor[missive.Message] = missive.Processor()
    source: queue.Queue[tuple[bytes, bytes]] = queue.Queue()
    source.put((b"id-1", b"x"))
    adapter = QueueAdapter(missive.RawMessage, processor, source)
    with pytest.raises(missive.HandlingError):
        adapter.run()
    assert adapter.done == []
    assert source.get_nowait() == (b"id-1", b"x")


def test_stop_from_another_thread_ends_run_and_runs_the_hooks() -> None:
    processor: missive.Processor[missive.Message] = missive.Processor()
    events: list[str] = []
    processor.after_processing(lambda p: events.append("after_processing"))
    adapter = QueueAdapter(missive.RawMessage, processor, queue.Queue())
    thread = threading.Thread(target=adapter.run)
    thread.start()
    assert adapter.wait_ready(timeout=10)
    adapter.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert events == ["after_processing"]


def test_sigterm_in_the_main_thread_stops_the_run() -> None:
    processor: missive.Processor[missive.Message] = missive.Processor()
    adapter = QueueAdapter(missive.RawMessage, processor, queue.Queue())
    processor.before_processing(lambda p: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    adapter.run()  # returns: the signal asked it to stop
    assert adapter.stop_requested
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back


def test_count_delivery_counts_redeliveries_in_the_dlq(tmp_path: Path) -> None:
    processor: missive.Processor[missive.Message] = missive.Processor()
    adapter = QueueAdapter(missive.RawMessage, processor, queue.Queue())
    message = missive.RawMessage(b"x", b"id-1")
    with SQLiteDLQ(tmp_path / "dlq.db") as dlq:
        processor.set_dlq(dlq)
        context = processor.context()
        # The first redelivery is the second delivery, and so on.
        assert adapter.count_delivery(context, message) == 2
        assert adapter.count_delivery(context, message) == 3
        adapter.forget_deliveries(context, message)
        assert adapter.count_delivery(context, message) == 2


def test_count_delivery_survives_a_crashed_worker(tmp_path: Path) -> None:
    path = tmp_path / "dlq.db"
    program = (
        "import os, missive, queue, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent.parent / 'examples')!r})\n"
        "from queue_adapter import QueueAdapter\n"
        "from missive.dlq.sqlite import SQLiteDLQ\n"
        "p = missive.Processor()\n"
        f"p.set_dlq(SQLiteDLQ({str(path)!r}))\n"
        "a = QueueAdapter(missive.RawMessage, p, queue.Queue())\n"
        "a.count_delivery(p.context(), missive.RawMessage(b'x', b'id-1'))\n"
        "os._exit(1)\n"
    )
    for _ in range(2):
        assert os.spawnv(os.P_WAIT, sys.executable, [sys.executable, "-c", program]) == 1
    with SQLiteDLQ(path) as dlq:
        assert dlq.record_attempt(b"id-1") == 3


def test_count_delivery_without_a_store_is_none() -> None:
    processor: missive.Processor[missive.Message] = missive.Processor()
    processor.set_dlq({})
    adapter = QueueAdapter(missive.RawMessage, processor, queue.Queue())
    assert adapter.count_delivery(processor.context(), missive.RawMessage(b"x")) is None
