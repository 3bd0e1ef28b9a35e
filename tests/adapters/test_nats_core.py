"""NATSAdapter (core NATS) specifics against the real server on 127.0.0.1:4222.

The conformance suites run in test_nats.py. Each test uses its own subjects (random
suffix).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import missive
from missive.adapters.nats import NATSAdapter
from missive.runtime import Capability
from missive.testing.conformance.support import Recorder, running, wait_until
from tests.conformance.nats_harness import NATSCoreHarness
from tests.services import require


@pytest.fixture
def harness() -> Iterator[NATSCoreHarness]:
    require("nats")
    h = NATSCoreHarness()
    yield h
    h.close()


def test_a_message_carries_its_subject_headers_and_reply_subject(
    harness: NATSCoreHarness,
) -> None:
    # Given an adapter on a wildcard subject
    recorder = Recorder()
    wildcard = f"missive.test.{harness.suffix}.*"
    with running(harness.adapter(missive.RawMessage, recorder.processor, subjects=wildcard)):
        # When a message with headers and a reply subject is published on a matching one
        subject = f"missive.test.{harness.suffix}.orders"
        harness.client.run(
            harness.client.nc.publish(subject, b"x", reply="inbox.1", headers={"k": "v"})
        )
        harness.client.publish(f"missive.test.{harness.suffix}.a.b", [b"too deep"])
        wait_until(lambda: recorder.count() == 1, "the message is handled")
        time.sleep(0.2)
    # Then its attributes say so, and it has a generated id
    [message] = recorder.messages
    expected = {"subject": subject, "headers": {"k": "v"}, "reply": "inbox.1"}
    assert dict(message.attributes) == expected
    assert message.message_id


def test_without_a_queue_group_every_adapter_gets_every_message(
    harness: NATSCoreHarness,
) -> None:
    # Given two adapters on the subject, in no queue group
    one, two = Recorder(), Recorder()
    first = harness.adapter(missive.RawMessage, one.processor, queue=None)
    with running(first), running(harness.adapter(missive.RawMessage, two.processor, queue=None)):
        # When three messages are published
        harness.publish([b"1", b"2", b"3"])
        wait_until(lambda: one.count() == two.count() == 3, "both handled all three")
    # Then each got all of them; the transport does not claim consumer groups
    assert one.bodies == two.bodies == [b"1", b"2", b"3"]
    assert not type(first.transport()).capabilities & Capability.CONSUMER_GROUPS
    grouped = harness.adapter(missive.RawMessage, one.processor)
    assert type(grouped.transport()).capabilities & Capability.CONSUMER_GROUPS


def test_a_nacked_message_is_dead_lettered_saying_core_nats_cannot_redeliver(
    harness: NATSCoreHarness,
) -> None:
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    processor.handle_for(lambda m: True)(lambda message, ctx: ctx.nack())
    dlq: dict[bytes, Any] = {}
    processor.set_dlq(dlq)
    with running(harness.adapter(missive.RawMessage, processor)):
        harness.publish([b"nacked"])
        wait_until(lambda: dlq, "the message is dead-lettered")
    [(_, reason)] = dlq.values()
    assert "core NATS cannot redeliver a message" in reason


def test_a_stop_goes_on_handling_what_the_server_sent_before(harness: NATSCoreHarness) -> None:
    # Given 50 messages sent at once and a handler that stops the adapter at the first
    adapters: list[missive.Adapter[Any]] = []
    recorder = Recorder(lambda m: (adapters[0].stop(), time.sleep(0.001)))
    adapter = harness.adapter(missive.RawMessage, recorder.processor)
    adapters.append(adapter)
    # When they are consumed
    with running(adapter):
        harness.publish([b"%d" % i for i in range(50)])
        wait_until(lambda: adapter.stop_requested, "the adapter is asked to stop")
    # Then the subscription was drained: every message was handled, none lost
    assert recorder.bodies == [b"%d" % i for i in range(50)]


def test_what_is_left_after_drain_timeout_is_dead_lettered_saying_so(
    harness: NATSCoreHarness,
) -> None:
    # Given a handler that stops the adapter, with drain_timeout=0
    adapters: list[missive.Adapter[Any]] = []
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    handled: list[bytes] = []

    @processor.handle_for(lambda m: True)
    def stop(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        handled.append(message.raw_data)
        adapters[0].stop()
        time.sleep(0.05)  # the rest arrives meanwhile
        ctx.ack()

    dlq: dict[bytes, Any] = {}
    processor.set_dlq(dlq)
    adapter = harness.adapter(missive.RawMessage, processor, drain_timeout=0)
    adapters.append(adapter)
    # When 20 messages are consumed
    with running(adapter):
        harness.publish([b"%d" % i for i in range(20)])
        wait_until(lambda: adapter.stop_requested, "the adapter is asked to stop")
    # Then what was not handled was dead-lettered, with the reason, and nothing lost
    assert len(handled) + len(dlq) == 20
    assert dlq
    assert all("drain_timeout=0 s passed" in reason for _, reason in dlq.values())


def test_a_stop_wakes_a_receive_waiting_for_messages(harness: NATSCoreHarness) -> None:
    adapter = harness.adapter(missive.RawMessage, Recorder().processor)
    adapter.poll_timeout = 10.0
    thread = threading.Thread(target=adapter.run, daemon=True)
    thread.start()
    assert adapter.wait_ready(10)
    time.sleep(0.2)
    started = time.monotonic()
    adapter.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0


def test_arguments_are_checked() -> None:
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    with pytest.raises(ValueError, match="at least one subject"):
        NATSAdapter(missive.RawMessage, processor, [])
    with pytest.raises(ValueError, match="drain_timeout"):
        NATSAdapter(missive.RawMessage, processor, "s", drain_timeout=-1)


def test_without_nats_py_the_import_names_the_extra() -> None:
    script = (
        "import sys; sys.modules['nats'] = None\n"
        "try:\n    import missive.adapters.nats\n"
        "except ImportError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("MissingExtraError")
    assert "pip install 'missive[nats]'" in out
