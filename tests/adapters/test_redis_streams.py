"""RedisStreamsAdapter against the real Redis on 127.0.0.1:6379: the suite, then specifics.

Each test uses its own stream and group (random suffix), deleted afterwards.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis import ConnectionError as ConnectionError_

import missive
import missive.runtime
from missive.adapters.redis import RedisStreamsAdapter
from missive.testing.conformance.adapter_suite import AdapterSuite
from missive.testing.conformance.events_suite import EventsSuite
from missive.testing.conformance.harness import WithOptions
from missive.testing.conformance.support import Recorder, memory_growth, running, wait_until
from tests.conformance.redis_harness import CLAIM_IDLE_MS, URL, RedisStreamsHarness
from tests.services import require


@pytest.fixture
def harness() -> Iterator[RedisStreamsHarness]:
    require("redis")
    h = RedisStreamsHarness()
    yield h
    h.close()


class TestRedisStreamsConformance(AdapterSuite, EventsSuite):
    """Every test of the adapter suite, on Redis Streams."""



class TestRedisStreamsConcurrentConformance(AdapterSuite, EventsSuite):
    """The same suites with eight messages in flight (``concurrency=8``)."""

    @pytest.fixture
    def harness(self, harness: RedisStreamsHarness) -> WithOptions:
        return WithOptions(harness, concurrency=8)


# -- Streams specifics -------------------------------------------------------------------


def dlq_processor(
    handler: Callable[[missive.RawMessage, missive.HandlingContext[Any]], object],
) -> tuple[missive.Processor[missive.RawMessage], dict[bytes, tuple[missive.Message, str]]]:
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    processor.handle_for(lambda m: True)(handler)
    dlq: dict[bytes, tuple[missive.Message, str]] = {}
    processor.set_dlq(dlq)
    return processor, dlq


def test_a_message_carries_the_entry_id_and_the_stream_attributes(
    harness: RedisStreamsHarness,
) -> None:
    # Given an entry with the message field and one more field
    entry_id = harness.client.xadd(harness.stream, {"data": b"body", "source": b"billing"})
    recorder = Recorder()
    # When it is consumed
    adapter = harness.adapter(missive.RawMessage, recorder.processor, consumer="worker-1")
    with running(adapter):
        wait_until(lambda: recorder.count() == 1, "the entry is handled")
    # Then its id is the entry id and its attributes say where it came from
    [message] = recorder.messages
    assert message.message_id == entry_id
    assert dict(message.attributes) == {
        "stream": harness.stream,
        "group": harness.group,
        "consumer": "worker-1",
        "delivery_count": 1,
        "fields": {"source": b"billing"},
    }


def test_a_poison_message_is_dead_lettered_after_max_deliveries(
    harness: RedisStreamsHarness,
) -> None:
    # Given a handler that always nacks, and max_deliveries=3
    counts: list[int] = []

    def always_nack(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        counts.append(message.attributes["delivery_count"])
        ctx.nack()

    processor, dlq = dlq_processor(always_nack)
    harness.publish([b"poison"])
    # When it is consumed
    with running(harness.adapter(missive.RawMessage, processor, max_deliveries=3)):
        wait_until(lambda: dlq, "the message is dead-lettered")
        wait_until(lambda: harness.remaining() == 0, "the entry is acked")
    # Then it was handled three times, counted, then dead-lettered with a reason saying so
    assert counts == [1, 2, 3]
    [(message, reason)] = dlq.values()
    assert message.raw_data == b"poison"
    assert message.attributes["delivery_count"] == 4
    assert "delivered 4 times, more than max_deliveries=3" in reason


def test_entries_read_by_a_consumer_that_died_are_claimed_and_handled(
    harness: RedisStreamsHarness,
) -> None:
    # Given an entry that a consumer read in the group and never acked (it died)
    [entry_id] = [harness.client.xadd(harness.stream, {"data": b"orphan"})]
    harness.client.xgroup_create(harness.stream, harness.group, id="0")
    harness.client.xreadgroup(harness.group, "dead-consumer", {harness.stream: ">"}, count=10)
    recorder = Recorder()
    # When an adapter runs in the same group
    with running(harness.adapter(missive.RawMessage, recorder.processor)):
        wait_until(lambda: recorder.count() == 1, "the orphan is handled")
        wait_until(lambda: harness.remaining() == 0, "the entry is acked")
    # Then it claimed the entry once idle (XAUTOCLAIM): same id, second delivery
    [message] = recorder.messages
    assert message.message_id == entry_id
    assert message.attributes["delivery_count"] == 2


def test_an_entry_without_the_message_field_is_dead_lettered(
    harness: RedisStreamsHarness,
) -> None:
    # Given an entry without the "data" field
    harness.client.xadd(harness.stream, {"payload": b"x"})
    processor, dlq = dlq_processor(lambda message, ctx: ctx.ack())
    # When it is consumed
    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: dlq, "the entry is dead-lettered")
        wait_until(lambda: harness.remaining() == 0, "the entry is acked")
    # Then the reason names the missing field, and its fields are kept
    [(message, reason)] = dlq.values()
    assert "no 'data' field" in reason
    assert message.attributes["fields"] == {"payload": b"x"}


def test_a_message_that_cannot_be_dead_lettered_is_left_pending_and_delivered_again(
    harness: RedisStreamsHarness, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a processor without a DLQ whose handler fails on the first delivery
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    deliveries: list[missive.RawMessage] = []

    @processor.handle_for(lambda m: True)
    def fail_once(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        deliveries.append(message)
        if len(deliveries) == 1:
            raise RuntimeError("secret payload detail")
        ctx.ack()

    # When a message is consumed
    with running(harness.adapter(missive.RawMessage, processor)):
        harness.publish([b"retry me"])
        wait_until(lambda: len(deliveries) == 2, "the message is delivered again")
        wait_until(lambda: harness.remaining() == 0, "the entry is acked")
    # Then the error was logged with the id but not the exception text, and not acked
    first, second = deliveries
    assert second.message_id == first.message_id
    assert second.attributes["delivery_count"] == 2
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert repr(first.message_id) in record.getMessage()
    assert "not acked" in record.getMessage()
    assert "secret payload detail" not in record.getMessage()


def test_a_stop_hands_back_the_entries_read_but_not_started(
    harness: RedisStreamsHarness,
) -> None:
    # Given 20 entries read in one batch and a handler that stops the adapter
    harness.publish([b"%d" % i for i in range(20)])
    adapters: list[missive.Adapter[Any]] = []
    recorder = Recorder(lambda message: adapters[0].stop())
    adapter = harness.adapter(missive.RawMessage, recorder.processor, batch_size=20)
    adapters.append(adapter)
    # When it stops after the first
    with running(adapter):
        wait_until(lambda: adapter.stop_requested, "the adapter is asked to stop")
    # Then the other 19 are pending, idle enough to be claimed at once, never delivered
    assert recorder.bodies == [b"0"]
    pending = harness.pending()
    assert len(pending) == 19
    assert all(p["times_delivered"] == 0 for p in pending)
    assert all(p["time_since_delivered"] >= CLAIM_IDLE_MS for p in pending)


def test_a_generated_consumer_leaves_the_group_when_it_stops_with_nothing_pending(
    harness: RedisStreamsHarness,
) -> None:
    # Given an adapter with a generated consumer name that handled a message
    recorder = Recorder()
    with running(harness.adapter(missive.RawMessage, recorder.processor)):
        harness.publish([b"x"])
        wait_until(lambda: recorder.count() == 1, "the message is handled")
        assert len(harness.client.xinfo_consumers(harness.stream, harness.group)) == 1
    # When it has stopped
    # Then the group does not keep its name
    assert harness.client.xinfo_consumers(harness.stream, harness.group) == []


def test_a_stream_deleted_while_consuming_is_created_again(
    harness: RedisStreamsHarness,
) -> None:
    # Given a consuming adapter
    recorder = Recorder()
    with running(harness.adapter(missive.RawMessage, recorder.processor)):
        harness.publish([b"first"])
        wait_until(lambda: recorder.count() == 1, "the first message is handled")
        # When the stream (and so the group) is deleted, then written again
        harness.client.delete(harness.stream)
        wait_until(lambda: harness.client.exists(harness.stream), "the stream is created again")
        harness.publish([b"second"])
        # Then consumption goes on
        wait_until(lambda: recorder.count() == 2, "the second message is handled")
    assert recorder.bodies == [b"first", b"second"]


def test_a_killed_connection_is_logged_and_reestablished(
    harness: RedisStreamsHarness, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an adapter blocked reading the stream
    recorder = Recorder()
    with running(harness.adapter(missive.RawMessage, recorder.processor, block_ms=2000)):
        time.sleep(0.2)
        # When the server kills its connection
        harness.kill_connections()
        harness.publish([b"after"])
        # Then a warning says so, and the next message is handled on a new connection
        wait_until(lambda: recorder.count() == 1, "the message is handled")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "connection to Redis lost or refused" in w and "reconnecting in" in w for w in warnings
    )


def test_an_unreachable_server_is_retried_with_growing_backoff_until_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a URL, with a password, where nothing listens
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    recorder = Recorder()
    adapter = RedisStreamsAdapter(
        missive.RawMessage,
        recorder.processor,
        "s",
        url=f"redis://worker:s3cret@127.0.0.1:{port}/0",
        max_reconnect_delay=0.4,
    )
    caplog.set_level(logging.WARNING, "missive.adapters.redis")
    thread = threading.Thread(target=adapter.run, daemon=True)
    # When the adapter runs for a while
    thread.start()
    wait_until(lambda: len(caplog.records) >= 5, "five failed attempts are logged")
    # Then each attempt is logged with its number and a delay that grows to the cap
    attempts = [r.args[4] for r in caplog.records[:5]]  # type: ignore[index]
    delays = [r.args[3] for r in caplog.records[:5]]  # type: ignore[index]
    assert attempts == [1, 2, 3, 4, 5]
    assert all(d <= 0.4 for d in delays)
    assert max(delays[2:]) > min(delays[:2])
    # and the password is never logged
    assert "redis://worker:***@127.0.0.1" in caplog.records[0].getMessage()
    assert all("s3cret" not in r.getMessage() for r in caplog.records)
    # and a stop ends the waiting at once
    adapter.stop()
    thread.join(2)
    assert not thread.is_alive()
    assert not adapter.wait_ready(0)


SIGNAL_SCRIPT = """
import sys
import missive
from missive.adapters.redis import RedisStreamsAdapter

processor = missive.Processor()
processor.handle_for(lambda m: True)(lambda message, ctx: ctx.ack())
processor.before_processing(lambda ctx: print("before", flush=True))
processor.after_processing(lambda ctx: print("after", flush=True))
adapter = RedisStreamsAdapter(missive.RawMessage, processor, sys.argv[1], group=sys.argv[2],
                              url=sys.argv[3], block_ms=200)
adapter.run()
print("returned", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_in_the_main_thread_stops_gracefully(
    harness: RedisStreamsHarness, signum: signal.Signals
) -> None:
    # Given a worker process running the adapter in its main thread
    process = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_SCRIPT, harness.stream, harness.group, URL],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "before\n"
        wait_until(lambda: harness.client.exists(harness.stream), "the group is created")
        # When it receives the signal
        process.send_signal(signum)
        out, _ = process.communicate(timeout=10)
    finally:
        process.kill()
        process.wait()
    # Then it ran the after_processing hooks and run() returned normally
    assert out == "after\nreturned\n"
    assert process.returncode == 0


def test_memory_stays_flat_over_thousands_of_messages(harness: RedisStreamsHarness) -> None:
    # Given an adapter that handled 1,000 messages
    # When it handles 5,000 more
    growth = memory_growth(harness)
    # Then they left less than 20 bytes each behind (a kept message costs hundreds)
    assert growth < 100_000, f"memory grew by {growth} bytes"


def test_a_stop_wakes_a_read_waiting_for_entries(harness: RedisStreamsHarness) -> None:
    # Given an adapter waiting up to 10 s for new entries
    adapter = harness.adapter(missive.RawMessage, Recorder().processor, block_ms=10_000)
    thread = threading.Thread(target=adapter.run, daemon=True)
    thread.start()
    assert adapter.wait_ready(10)
    time.sleep(0.2)
    # When another thread stops it
    started = time.monotonic()
    adapter.stop()
    thread.join(10)
    # Then run() returns at once, not when the wait ends
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0


# -- The transport under the delivery loop ----------------------------------------------


def test_acks_owed_when_the_connection_fails_are_sent_by_the_next_connection(
    harness: RedisStreamsHarness,
) -> None:
    # Given a transport that received an entry and owes its ack
    harness.publish([b"x"])
    transport = harness.adapter(missive.RawMessage, Recorder().processor).transport()
    transport.connect()
    batch = transport.receive(10, 0.1)
    transport.ack(list(batch.handles))
    transport.receive(10, 0.001)  # sends the owed ack with the read
    harness.publish([b"y"])
    batch = transport.receive(10, 0.1)
    assert batch.bodies == [b"y"]
    transport.ack(list(batch.handles))
    # When its connection fails before the ack is sent
    assert transport.fault(ConnectionError_()) is missive.runtime.Fault.RECONNECT
    transport.close()
    # Then the entry stays pending, and the next connection acks it
    assert len(harness.pending()) == 1
    transport.connect()
    transport.receive(10, 0.001)
    transport.close()
    assert harness.remaining() == 0


def test_a_stop_after_a_lost_connection_warns_of_the_acks_unsent(
    harness: RedisStreamsHarness, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a transport that owes an ack when its connection fails
    harness.publish([b"x"])
    transport = harness.adapter(missive.RawMessage, Recorder().processor).transport()
    transport.connect()
    transport.ack(list(transport.receive(10, 0.1).handles))
    transport.fault(ConnectionError_())
    transport.close()
    # When the loop closes it for good, without reconnecting
    transport.close()
    # Then a warning says how many acks were not sent
    assert any("stopped with 1 acks unsent" in r.getMessage() for r in caplog.records)
    assert len(harness.pending()) == 1


def test_a_connection_dropped_while_idle_is_noticed_not_replaced_silently(
    harness: RedisStreamsHarness,
) -> None:
    # Given a connected transport, idle (as when every worker is busy)
    adapter = harness.adapter(missive.RawMessage, missive.Processor(), concurrency=4)
    transport = adapter.transport()
    transport.connect()
    try:
        # When Redis drops its connection, then a receive soon fails as a lost
        # connection (redis-py would replace it quietly: no event, a stale CLIENT id)
        harness.kill_connections()

        def receive_three_times() -> None:
            for _ in range(3):
                transport.receive(10, 0.01)

        with pytest.raises(ConnectionError_):
            receive_three_times()
    finally:
        transport.close()
