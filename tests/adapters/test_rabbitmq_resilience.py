"""RabbitMQAdapter under stress, beyond the conformance suite: prefetched messages at a
stop, repeated connection kills and the reconnection backoff, a prompt stop."""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections import Counter
from typing import Any

import pytest

import missive
from missive.testing.conformance.support import Recorder, running, wait_until
from tests.adapters.test_rabbitmq import (
    RabbitMQHarness,
    harness,  # noqa: F401 - fixture
)


def test_a_stop_with_prefetched_messages_in_hand_loses_none(harness: RabbitMQHarness) -> None:  # noqa: F811
    # Given 1,000 messages and a slow first worker with a large prefetch
    bodies = [b"%d" % i for i in range(1000)]
    harness.publish(bodies)
    first = Recorder(on_message=lambda m: time.sleep(0.002))
    # When it is stopped while it holds prefetched messages
    with running(harness.adapter(missive.RawMessage, first.processor, prefetch=200)):
        wait_until(lambda: len(first.messages) >= 100, "the first worker handled 100")
    handled_first = len(first.messages)
    assert handled_first < 1000, "the first worker finished everything: nothing was tested"
    # Then every message it did not handle is back on the queue...
    assert harness.remaining() == 1000 - handled_first
    # ...and a second worker consumes exactly the rest
    second = Recorder()
    with running(harness.adapter(missive.RawMessage, second.processor)):
        wait_until(lambda: len(second.messages) >= 1000 - handled_first, "the rest is handled")
        wait_until(lambda: harness.ready() == 0, "the queue is empty")
    together = first.bodies + second.bodies
    assert sorted(together, key=int) == bodies
    assert harness.remaining() == 0


def test_consumption_continues_after_the_broker_kills_the_connection(
    harness: RabbitMQHarness,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a worker in the middle of 3,000 messages
    bodies = [b"%d" % i for i in range(3000)]
    harness.publish(bodies)
    recorder = Recorder(on_message=lambda m: time.sleep(0.001))
    adapter = harness.adapter(missive.RawMessage, recorder.processor, prefetch=50)
    with running(adapter):
        wait_until(lambda: len(recorder.messages) >= 200, "200 messages are handled")
        # When the broker closes its connection (rabbitmqctl close_connection), twice
        for _ in range(2):
            adapter._ready.clear()
            harness.kill_connections()
            # Then it reconnects each time and consumes the rest
            assert adapter.wait_ready(30), "the adapter did not reconnect"
        wait_until(lambda: harness.remaining() == 0, "every message is acked", timeout=60)
    # Each drop was logged; the backoff starts afresh after a connection that worked
    drops = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING" and "CONNECTION_FORCED" in r.getMessage()
    ]
    assert len(drops) == 2
    assert all("reconnecting in 0.5 s" in d for d in drops)
    # Nothing was lost; a message whose ack the drop cut off was delivered again
    counts = Counter(recorder.bodies)
    assert set(counts) == set(bodies)
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= 50, f"{duplicates} redeliveries: more than the prefetch window"


def test_stop_from_another_thread_returns_promptly(harness: RabbitMQHarness) -> None:  # noqa: F811
    # Given an idle adapter waiting for messages
    recorder = Recorder()
    adapter = harness.adapter(missive.RawMessage, recorder.processor)
    thread = threading.Thread(target=adapter.run, daemon=True)
    thread.start()
    assert adapter.wait_ready(30)
    # When stop() is called from this thread
    started = time.monotonic()
    adapter.stop()
    thread.join(10)
    # Then run() returns at once (the wait is woken, not polled)
    assert not thread.is_alive()
    assert time.monotonic() - started < 0.4


def test_memory_stays_flat_over_thousands_of_messages(harness: RabbitMQHarness) -> None:  # noqa: F811
    # Given a handler that keeps nothing, and 6,000 messages
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    handled = 0

    @processor.handle_for(lambda m: True)
    def count(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        nonlocal handled
        handled += 1
        ctx.ack()

    harness.publish([b"x" * 200 for _ in range(6000)])
    tracemalloc.start()
    try:
        with running(harness.adapter(missive.RawMessage, processor)):
            wait_until(lambda: handled >= 1000, "a first 1,000 messages are handled")
            before, _ = tracemalloc.get_traced_memory()
            # When 5,000 more are handled
            wait_until(lambda: handled >= 6000, "every message is handled", timeout=120)
            after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then memory grew by less than 20 bytes a message handled
    # (a kept message costs some 500 bytes; pika's buffers vary by tens of KB)
    assert after - before < 100_000, f"memory grew by {after - before} bytes"


def test_a_server_that_resets_every_connection_is_retried_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import socket
    import struct

    from missive.adapters.rabbitmq import RabbitMQAdapter

    # Given a loopback "broker" that accepts each connection and resets it at once
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    resets = 0

    def reset_all() -> None:
        nonlocal resets
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            resets += 1

    threading.Thread(target=reset_all, daemon=True).start()
    processor: missive.Processor[missive.Message] = missive.Processor()
    adapter = RabbitMQAdapter(
        missive.RawMessage, processor, "q", url=f"amqp://guest:guest@127.0.0.1:{port}/%2F",
        max_reconnect_delay=0.2,
    )
    caplog.set_level("WARNING", logger="missive")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            adapter.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        # When it has been reset several times, it is still trying, not crashed
        wait_until(lambda: resets >= 3, "three connection attempts")
        assert thread.is_alive()
        assert errors == []
        assert "reconnecting" in caplog.text
    finally:
        adapter.stop()
        thread.join(timeout=10)
        listener.close()
    assert not thread.is_alive()
    assert errors == []
