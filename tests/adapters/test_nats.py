"""The NATS adapters against the real server on 127.0.0.1:4222: the suites, then JetStream.

Each test uses its own stream, durable consumer and subjects (random suffix), deleted
afterwards. Core NATS specifics are in test_nats_core.py, a server restart in
test_nats_restart.py.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import nats.js.errors
import pytest
from nats.js import api

import missive
from missive.adapters.nats import NATSJetStreamAdapter
from missive.runtime import Capability, Fault
from missive.testing.conformance.adapter_suite import AdapterSuite
from missive.testing.conformance.events_suite import EventsSuite
from missive.testing.conformance.harness import WithOptions
from missive.testing.conformance.support import (
    Recorder,
    memory_growth,
    running,
    running_allowing,
    wait_until,
)
from tests.conformance.nats_harness import URL, NATSCoreHarness, NATSJetStreamHarness
from tests.services import require

DLQ = dict[bytes, tuple[missive.Message, str]]


@pytest.fixture
def harness() -> Iterator[NATSJetStreamHarness]:
    require("nats")
    h = NATSJetStreamHarness()
    yield h
    h.close()


@pytest.fixture
def core_harness() -> Iterator[NATSCoreHarness]:
    require("nats")
    h = NATSCoreHarness()
    yield h
    h.close()


class TestNATSJetStreamConformance(AdapterSuite, EventsSuite):
    """Every test of the adapter and events suites, on a JetStream pull consumer."""


class TestNATSJetStreamConcurrentConformance(AdapterSuite, EventsSuite):
    """The same suites with eight messages in flight (``concurrency=8``)."""

    @pytest.fixture
    def harness(self, harness: NATSJetStreamHarness) -> WithOptions:
        return WithOptions(harness, concurrency=8)


class TestNATSCoreConformance(AdapterSuite, EventsSuite):
    """Every test of the adapter and events suites, on core NATS in a queue group."""

    @pytest.fixture
    def harness(self, core_harness: NATSCoreHarness) -> NATSCoreHarness:
        return core_harness


class TestNATSCoreConcurrentConformance(AdapterSuite, EventsSuite):
    """The same suites on core NATS with eight messages in flight."""

    @pytest.fixture
    def harness(self, core_harness: NATSCoreHarness) -> WithOptions:
        return WithOptions(core_harness, concurrency=8)


# -- JetStream specifics -------------------------------------------------------------------


def dlq_processor(
    handler: Callable[[missive.RawMessage, missive.HandlingContext[Any]], object],
) -> tuple[missive.Processor[missive.RawMessage], DLQ]:
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    processor.handle_for(lambda m: True)(handler)
    dlq: DLQ = {}
    processor.set_dlq(dlq)
    return processor, dlq


def test_a_message_carries_stream_and_sequence_as_id_and_its_attributes(
    harness: NATSJetStreamHarness,
) -> None:
    # Given a message published without Nats-Msg-Id, with a header
    ack = harness.publish_one(b"body", headers={"source": "billing"})
    recorder = Recorder()
    # When it is consumed
    with running(harness.adapter(missive.RawMessage, recorder.processor)):
        wait_until(lambda: recorder.count() == 1, "the message is handled")
    # Then its id is the stream and sequence, and its attributes say where it came from
    [message] = recorder.messages
    assert message.message_id == f"{harness.stream}:{ack.seq}".encode()
    assert dict(message.attributes) == {
        "subject": harness.subject,
        "stream": harness.stream,
        "sequence": ack.seq,
        "consumer": harness.durable,
        "headers": {"source": "billing"},
        "delivery_count": 1,
        "publisher_id": False,
    }


def test_the_nats_msg_id_header_is_the_message_id_and_is_kept_on_redelivery(
    harness: NATSJetStreamHarness,
) -> None:
    # Given a message whose publisher set Nats-Msg-Id, and a handler nacking it once
    harness.publish_one(b"x", headers={"Nats-Msg-Id": "order-42"})
    seen: list[missive.RawMessage] = []

    def nack_once(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        seen.append(message)
        ctx.nack() if len(seen) == 1 else ctx.ack()

    processor, _ = dlq_processor(nack_once)
    # When it is consumed
    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: len(seen) == 2, "the message is delivered twice")
        wait_until(lambda: harness.remaining() == 0, "the message is acked")
    # Then both deliveries have the publisher's id, and the second is counted
    assert [m.message_id for m in seen] == [b"order-42", b"order-42"]
    assert [m.attributes["delivery_count"] for m in seen] == [1, 2]
    assert seen[0].attributes["publisher_id"] is True


def test_the_delivery_count_dead_letters_a_poison_message_after_max_deliveries(
    harness: NATSJetStreamHarness,
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
        wait_until(lambda: harness.remaining() == 0, "the message is acked")
    # Then JetStream's count drove it: three handlings, then the dead letter, unhandled
    assert counts == [1, 2, 3]
    [(message, reason)] = dlq.values()
    assert message.attributes["delivery_count"] == 4
    assert "delivered 4 times, more than max_deliveries=3" in reason


def test_a_dead_lettered_message_is_terminated_and_a_handled_one_acked(
    harness: NATSJetStreamHarness,
) -> None:
    # Given a handler that dead-letters one message and acks the other, and a listener
    # on JetStream's advisories of terminated messages for this consumer
    def judge(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        if message.raw_data == b"bad":
            raise ValueError("cannot handle it")
        ctx.ack()

    processor, dlq = dlq_processor(judge)
    advisories: list[bytes] = []
    subject = f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{harness.stream}.{harness.durable}"

    async def listen() -> Any:
        async def record(msg: Any) -> None:
            advisories.append(msg.data)

        return await harness.client.nc.subscribe(subject, cb=record)

    subscription = harness.client.run(listen())
    try:
        harness.publish([b"bad", b"good"])
        # When both are consumed
        with running(harness.adapter(missive.RawMessage, processor)):
            wait_until(lambda: harness.remaining() == 0, "both are settled")
            wait_until(lambda: advisories, "a termination advisory")
    finally:
        harness.client.run(subscription.unsubscribe())
    # Then the dead letter ended with +TERM (one advisory, its sequence), the other +ACK
    [(message, _)] = dlq.values()
    [advisory] = advisories
    assert json.loads(advisory)["stream_seq"] == message.attributes["sequence"]


def test_a_nack_is_redelivered_after_the_retry_delay_growing_per_delivery(
    harness: NATSJetStreamHarness,
) -> None:
    # Given a handler that nacks twice, with retry_delay=0.4 s
    times: list[float] = []

    def nack_twice(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        times.append(time.monotonic())
        ctx.nack() if len(times) < 3 else ctx.ack()

    processor, _ = dlq_processor(nack_twice)
    harness.publish([b"later"])
    # When it is consumed
    with running(harness.adapter(missive.RawMessage, processor, retry_delay=0.4)):
        wait_until(lambda: len(times) == 3, "the message is delivered three times")
    # Then JetStream held it back 0.4 s after the first nack, 0.8 s after the second
    first, second = times[1] - times[0], times[2] - times[1]
    assert 0.35 <= first < 0.75, first
    assert 0.75 <= second < 1.5, second


def test_competing_consumers_share_one_durable_consumer(harness: NATSJetStreamHarness) -> None:
    # Given two adapters on the same durable
    one, two = Recorder(lambda m: time.sleep(0.001)), Recorder(lambda m: time.sleep(0.001))
    with (
        running(harness.adapter(missive.RawMessage, one.processor)),
        running(harness.adapter(missive.RawMessage, two.processor)),
    ):
        # When 500 messages are published
        harness.publish([b"%d" % i for i in range(500)])
        wait_until(lambda: one.count() + two.count() >= 500, "every message is handled")
        # Then the stream has one consumer, which both pulled from, without duplicates
        consumers = harness.client.run(harness.client.jsm.consumers_info(harness.stream))
        assert [c.name for c in consumers] == [harness.durable]
    assert one.count() > 0
    assert two.count() > 0
    assert sorted(one.bodies + two.bodies, key=int) == [b"%d" % i for i in range(500)]


@pytest.mark.parametrize("in_progress", [True, False], ids=["in-progress", "without"])
def test_a_handler_longer_than_ack_wait_keeps_its_message_with_in_progress_acks(
    harness: NATSJetStreamHarness, in_progress: bool
) -> None:
    # Given a consumer with ack_wait=1 s, and a first worker whose handler takes 2.5 s
    options: dict[str, Any] = {"ack_wait": 1.0}
    if not in_progress:
        options["in_progress_interval"] = 0
    slow = Recorder(lambda m: time.sleep(2.5))
    other = Recorder()
    harness.publish([b"long"])
    with running(harness.adapter(missive.RawMessage, slow.processor, **options)):
        wait_until(lambda: harness.consumer().num_ack_pending == 1, "the message is in hand")
        # When a second worker pulls from the same consumer meanwhile
        with running(harness.adapter(missive.RawMessage, other.processor, **options)):
            wait_until(lambda: slow.count() == 1, "the slow handler finished")
            time.sleep(0.3)
    # Then with in-progress acks JetStream never gave it to the other worker;
    # without them it did, after ack_wait
    assert slow.bodies == [b"long"]
    assert other.bodies == ([] if in_progress else [b"long"])
    assert harness.remaining() == 0


def test_a_stop_naks_the_messages_pulled_but_not_started(harness: NATSJetStreamHarness) -> None:
    # Given 20 messages pulled in one batch and a handler that stops the adapter
    harness.publish([b"%d" % i for i in range(20)])
    adapters: list[missive.Adapter[Any]] = []
    recorder = Recorder(lambda message: adapters[0].stop())
    adapter = harness.adapter(missive.RawMessage, recorder.processor, batch_size=20, ack_wait=30)
    adapters.append(adapter)
    # When it stops after the first
    with running(adapter):
        wait_until(lambda: adapter.stop_requested, "the adapter is asked to stop")
    # Then the other 19 are back on the consumer at once (nacked: ack_wait is 30 s)
    assert recorder.bodies == [b"0"]
    assert harness.remaining() == 19
    second = Recorder()
    with running(harness.adapter(missive.RawMessage, second.processor)):
        wait_until(lambda: second.count() == 19, "the rest is handled", timeout=5)
    # and JetStream counted the delivery they were handed back from
    assert {m.attributes["delivery_count"] for m in second.messages} == {2}


def test_a_bound_consumer_is_used_as_it_is(harness: NATSJetStreamHarness) -> None:
    # Given a consumer made beforehand, filtered on one subject of the stream
    orders = f"missive.test.{harness.suffix}.orders"
    harness.client.run(
        harness.client.jsm.add_consumer(
            harness.stream,
            api.ConsumerConfig(durable_name="made-before", filter_subject=orders, ack_wait=7),
        )
    )
    harness.publish([b"not an order"])
    harness.publish([b"an order"], subject=orders)
    recorder = Recorder()
    # When an adapter binds to it
    adapter = harness.adapter(
        missive.RawMessage, recorder.processor, durable="made-before", bind=True
    )
    with running(adapter):
        wait_until(lambda: recorder.count() == 1, "the order is handled")
        time.sleep(0.2)
    # Then it consumed what the consumer filters, and left the consumer unchanged
    assert recorder.bodies == [b"an order"]
    assert harness.consumer("made-before").config.ack_wait == 7


def test_binding_to_a_missing_consumer_stops_run_with_the_error(
    harness: NATSJetStreamHarness,
) -> None:
    # Given bind=True and no such consumer
    adapter = harness.adapter(missive.RawMessage, Recorder().processor, bind=True)
    # When it runs
    with pytest.raises(nats.js.errors.NotFoundError) as caught:
        adapter.run()
    # Then run() raised at once, saying what is missing, and nothing was created
    assert "not found" in "".join(caught.value.__notes__)
    assert harness.client.run(harness.client.jsm.consumers_info(harness.stream)) == []


def test_a_missing_stream_stops_run_with_the_error(harness: NATSJetStreamHarness) -> None:
    adapter = NATSJetStreamAdapter(
        missive.RawMessage, Recorder().processor, f"nowhere-{harness.suffix}", url=URL
    )
    with pytest.raises(nats.js.errors.NotFoundError):
        adapter.run()


def test_a_filter_subject_with_a_wildcard_takes_only_its_subjects(
    harness: NATSJetStreamHarness,
) -> None:
    # Given messages on two subjects of the stream, and a filter matching one of them
    base = f"missive.test.{harness.suffix}"
    harness.publish([b"a"], subject=f"{base}.orders.new")
    harness.publish([b"b"], subject=f"{base}.audit.new")
    harness.publish([b"c"], subject=f"{base}.orders.paid")
    recorder = Recorder()
    adapter = harness.adapter(
        missive.RawMessage, recorder.processor, filter_subject=f"{base}.orders.*"
    )
    # When it consumes
    with running(adapter):
        wait_until(lambda: recorder.count() == 2, "the orders are handled")
        time.sleep(0.2)
    # Then it got the orders only, each with its subject
    assert [(m.raw_data, m.attributes["subject"]) for m in recorder.messages] == [
        (b"a", f"{base}.orders.new"),
        (b"c", f"{base}.orders.paid"),
    ]
    assert type(adapter.transport()).capabilities & Capability.PATTERNS


def test_a_stop_wakes_a_receive_waiting_for_messages(harness: NATSJetStreamHarness) -> None:
    # Given an adapter whose receive waits up to 10 s
    adapter = harness.adapter(missive.RawMessage, Recorder().processor)
    adapter.poll_timeout = 10.0
    thread = threading.Thread(target=adapter.run, daemon=True)
    thread.start()
    assert adapter.wait_ready(10)
    time.sleep(0.2)
    # When another thread stops it
    started = time.monotonic()
    adapter.stop()
    thread.join(10)
    # Then run() returns at once
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0


def test_acks_owed_when_the_connection_fails_are_sent_on_the_next_one(
    harness: NATSJetStreamHarness,
) -> None:
    # Given a transport that handled a message and owes its ack
    harness.publish([b"x"])
    transport = harness.adapter(missive.RawMessage, Recorder().processor).transport()
    transport.connect()
    batch = transport.receive(10, 2.0)
    assert batch.bodies == [b"x"]
    transport.ack(list(batch.handles))
    # When its connection fails before the ack is sent
    harness.kill_connections()
    wait_until(lambda: transport._nc is None or transport._nc.is_closed, "it sees the loss")
    with pytest.raises(nats.errors.Error) as caught:
        transport.receive(10, 0.05)
    assert transport.fault(caught.value) is Fault.RECONNECT
    transport.close()
    assert harness.remaining() == 1
    # Then the next connection acks it
    transport.connect()
    transport.receive(10, 0.05)
    transport.close()
    wait_until(lambda: harness.remaining() == 0, "the message is acked")


def test_an_unreachable_server_is_retried_with_growing_backoff_and_no_password_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a URL, with a password, where nothing listens
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = NATSJetStreamAdapter(
        missive.RawMessage,
        Recorder().processor,
        "s",
        url=f"nats://worker:s3cret@127.0.0.1:{port}",
        max_reconnect_delay=0.4,
    )
    caplog.set_level(logging.WARNING, "missive.runtime")
    thread = threading.Thread(target=adapter.run, daemon=True)
    # When it runs for a while
    thread.start()

    def attempts() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "missive.runtime"]

    wait_until(lambda: len(attempts()) >= 4, "four failed attempts are logged")
    adapter.stop()
    thread.join(5)
    # Then each attempt was logged with its number, never with the password
    assert [r.args[4] for r in attempts()[:4]] == [1, 2, 3, 4]  # type: ignore[index]
    assert "nats://***@127.0.0.1" in attempts()[0].getMessage()
    assert all("s3cret" not in r.getMessage() for r in caplog.records)
    assert not thread.is_alive()


def test_payloads_stay_out_of_the_logs(
    harness: NATSJetStreamHarness, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a handler that fails quoting its payload, and no DLQ
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    failures: list[bytes] = []

    @processor.handle_for(lambda m: True)
    def fail(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        failures.append(message.raw_data)
        if len(failures) == 1:
            raise ValueError(message.raw_data.decode())
        ctx.ack()

    caplog.set_level(logging.INFO)
    # When it is consumed, fails, is retried and acked
    with running(harness.adapter(missive.RawMessage, processor)):
        harness.publish([b"secret-payload-123"])
        wait_until(lambda: len(failures) == 2, "the message is delivered again")
    # Then no log record at INFO or above holds the payload
    assert caplog.records
    assert all("secret-payload-123" not in r.getMessage() for r in caplog.records)


def test_memory_stays_flat_over_thousands_of_messages(harness: NATSJetStreamHarness) -> None:
    growth = memory_growth(harness)
    assert growth < 100_000, f"memory grew by {growth} bytes"


SIGNAL_SCRIPT = """
import sys
import missive
from missive.adapters.nats import NATSJetStreamAdapter

processor = missive.Processor()
processor.handle_for(lambda m: True)(lambda message, ctx: ctx.ack())
processor.before_processing(lambda ctx: print("before", flush=True))
processor.after_processing(lambda ctx: print("after", flush=True))
adapter = NATSJetStreamAdapter(missive.RawMessage, processor, sys.argv[1], durable=sys.argv[2],
                               url=sys.argv[3])
adapter.run()
print("returned", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_in_the_main_thread_stops_gracefully(
    harness: NATSJetStreamHarness, signum: signal.Signals
) -> None:
    # Given a worker process running the adapter in its main thread
    process = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_SCRIPT, harness.stream, harness.durable, URL],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "before\n"
        wait_until(lambda: harness.has_consumer(), "the consumer is created")
        time.sleep(0.2)
        # When it receives the signal
        process.send_signal(signum)
        out, _ = process.communicate(timeout=10)
    finally:
        process.kill()
        process.wait()
    # Then it ran the after_processing hooks and run() returned normally
    assert out == "after\nreturned\n"
    assert process.returncode == 0


def test_a_handler_error_without_dlq_is_retried_by_jetstream(
    harness: NATSJetStreamHarness,
) -> None:
    # Given no DLQ and a handler that fails once
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    seen: list[missive.RawMessage] = []

    @processor.handle_for(lambda m: True)
    def fail_once(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        seen.append(message)
        if len(seen) == 1:
            raise RuntimeError("boom")
        ctx.ack()

    # When it is consumed
    with running_allowing(harness.adapter(missive.RawMessage, processor)):
        harness.publish([b"again"])
        wait_until(lambda: len(seen) == 2, "the message comes back")
        wait_until(lambda: harness.remaining() == 0, "it is acked")
    # Then it came back (a nak after retry_delay), same id, counted
    assert seen[1].message_id == seen[0].message_id
    assert seen[1].attributes["delivery_count"] == 2
