"""MQTTAdapter's persistent sessions on the real Mosquitto: stops, dead workers, failures.

Each test uses its own topic, group and client ids (random suffix), removed afterwards.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

import missive
from missive.adapters._mqtt_session import connection_lost
from missive.dlq.sqlite import SQLiteDLQ
from missive.testing.conformance.support import (
    Recorder,
    running,
    running_allowing,
    wait_until,
)
from tests.conformance.mqtt_harness import URL, MQTTHarness, connected, stop
from tests.services import require


@pytest.fixture
def harness() -> Iterator[MQTTHarness]:
    require("mqtt")
    h = MQTTHarness()
    yield h
    h.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_messages_published_while_the_worker_is_stopped_come_when_it_starts_again(
    harness: MQTTHarness, protocol: str
) -> None:
    # Given a worker that ran once (its session exists) and was stopped
    first = Recorder()
    adapter = harness.adapter(missive.RawMessage, first.processor, protocol=protocol)
    with running(adapter):
        harness.publish([b"before"])
        wait_until(lambda: first.count() == 1, "the first message is handled")
    # When messages are published while it is stopped, and it starts again (same client id)
    harness.publish([b"while-stopped-%d" % i for i in range(20)])
    second = Recorder()
    again = harness.adapter(missive.RawMessage, second.processor, protocol=protocol)
    assert again.client_id == adapter.client_id
    with running(again):
        wait_until(lambda: second.count() == 20, "the messages kept are handled")
    # Then it got each of them, once, in order; the broker holds nothing more
    assert second.bodies == [b"while-stopped-%d" % i for i in range(20)]
    assert harness.remaining() == 0


def test_a_stop_leaves_the_unstarted_messages_in_the_session_flagged_as_redelivered(
    harness: MQTTHarness,
) -> None:
    # Given 30 messages kept for a worker whose handler stops it at the first
    harness.publish([b"%d" % i for i in range(30)])
    adapters: list[missive.Adapter[Any]] = []
    first = Recorder(lambda m: adapters[0].stop())
    adapters.append(harness.adapter(missive.RawMessage, first.processor))
    with running(adapters[0]):
        wait_until(lambda: adapters[0].stop_requested, "the worker is asked to stop")
    # When it starts again
    second = Recorder()
    with running(harness.adapter(missive.RawMessage, second.processor)):
        wait_until(lambda: first.count() + second.count() == 30, "every message is handled")
    # Then the rest came, none twice; those it had received came again with DUP set
    assert sorted(first.bodies + second.bodies, key=int) == [b"%d" % i for i in range(30)]
    redelivered = [m for m in second.messages if m.attributes["dup"]]
    assert redelivered
    assert all(m.attributes["delivery_count"] is None for m in redelivered)


WORKER = textwrap.dedent(
    """
    import sys, time
    import missive
    from missive.adapters.mqtt import MQTTAdapter

    processor = missive.Processor()

    @processor.handle_for(lambda m: True)
    def hang(message, ctx):
        print("handling", flush=True)
        time.sleep(600)

    url, topic, group, client_id = sys.argv[1:]
    MQTTAdapter(missive.RawMessage, processor, topic, group=group, url=url,
                client_id=client_id, session_expiry=300).run()
    """
)


def test_a_message_whose_worker_was_killed_comes_again_and_counts_towards_max_deliveries(
    harness: MQTTHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a worker process killed (SIGKILL) while it handles a QoS 1 message
    client_id = harness.client_id()
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, URL, harness.topic, harness.group, client_id],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        harness.publish([b"kills its worker"])
        assert worker.stdout is not None
        assert worker.stdout.readline() == "handling\n"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        if worker.stdout is not None:
            worker.stdout.close()
    # When a worker with the same client id starts, with a DLQ store and max_deliveries=1
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    handled: list[missive.RawMessage] = []
    processor.handle_for(lambda m: True)(lambda message, ctx: handled.append(message))
    dlq = SQLiteDLQ(tmp_path / "dlq.db")
    processor.set_dlq(dlq)
    caplog.set_level(logging.WARNING)
    try:
        adapter = harness.adapter(missive.RawMessage, processor, max_deliveries=1)
        assert adapter.client_id == client_id
        with running(adapter):
            wait_until(lambda: len(dlq) == 1, "the message is dead-lettered")
        # Then it came again (DUP), was counted in the DLQ, and dead-lettered unhandled
        assert not handled
        [(message, reason)] = dlq.values()
        assert message.raw_data == b"kills its worker"
        assert message.attributes["dup"] is True
        assert "delivered 2 times, more than max_deliveries=1" in reason
        assert "counted by a hash of its topic and body" in caplog.text
    finally:
        dlq.close()
    assert harness.remaining() == 0


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_message_neither_handled_nor_stored_stops_the_worker_and_comes_again(
    harness: MQTTHarness, concurrency: int
) -> None:
    # Given a worker without a DLQ whose handler fails on one message
    processor: missive.Processor[missive.RawMessage] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def fail_on_bad(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        if message.raw_data == b"bad":
            raise RuntimeError("no")
        ctx.ack()

    adapter = harness.adapter(missive.RawMessage, processor, concurrency=concurrency)
    # When it is consumed
    with running_allowing(adapter, missive.HandlingError) as errors:
        harness.publish([b"ok", b"bad"])
        wait_until(lambda: errors, "run() stops with the error")
    # Then run() stopped with it, and the message is still in the session, not acked
    [error] = errors
    assert isinstance(error, missive.HandlingError)
    assert harness.held(adapter.client_id) == 1
    # and the restarted worker (with a DLQ now) gets it again
    dlq: dict[bytes, Any] = {}
    processor.set_dlq(dlq)
    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: dlq, "the message is dead-lettered")
    [(message, _)] = dlq.values()
    assert message.raw_data == b"bad"
    assert harness.remaining() == 0


def test_a_nack_dead_letters_the_message_saying_mqtt_has_no_nack(harness: MQTTHarness) -> None:
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    processor.handle_for(lambda m: True)(lambda message, ctx: ctx.nack())
    dlq: dict[bytes, Any] = {}
    processor.set_dlq(dlq)
    with running(harness.adapter(missive.RawMessage, processor)):
        harness.publish([b"nacked"])
        wait_until(lambda: dlq, "the message is dead-lettered")
    [(_, reason)] = dlq.values()
    assert "nacked by its handler; MQTT cannot redeliver a message on demand" in reason
    assert "it has no nack" in reason
    assert harness.remaining() == 0


def test_a_session_the_broker_lost_is_made_again_with_a_warning(
    harness: MQTTHarness, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a running worker
    caplog.set_level(logging.INFO, "missive.adapters.mqtt")
    recorder = Recorder()
    adapter = harness.adapter(missive.RawMessage, recorder.processor)
    with running(adapter):
        # When its session goes while it is connected (a clean start with its client id:
        # the broker drops the worker, and the session ends with that connection)
        stop(connected(adapter.client_id, clean_start=True))
        wait_until(lambda: "no session" in caplog.text, "the lost session is noticed")
        # Then it subscribes again in a new session and goes on
        harness.publish([b"after"])
        wait_until(lambda: recorder.count() == 1, "the next message is handled")
    # and a warning said messages published in between were not kept
    [warning] = [r for r in caplog.records if "no session" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert repr(adapter.client_id) in warning.getMessage()
    assert "were not kept" in warning.getMessage()


def test_a_session_taken_over_says_two_workers_may_share_a_client_id() -> None:
    # Mosquitto 2.0 closes the older connection without a reason; brokers that send
    # DISCONNECT with "session taken over" (0x8E) get this text in the warning.
    code = ReasonCode(PacketTypes.DISCONNECT, identifier=0x8E)
    text = str(connection_lost(code, "worker-1"))
    assert "another client connected with client id 'worker-1'" in text
    assert "give each its own" in text
    assert str(connection_lost(ReasonCode(PacketTypes.DISCONNECT, identifier=0x8B), "w")) == (
        "connection closed (Server shutting down)"
    )


@pytest.mark.parametrize("concurrency", [1, 8])
def test_a_message_in_hand_when_the_connection_drops_comes_again_and_is_acked(
    harness: MQTTHarness, concurrency: int
) -> None:
    # Given a handler in the middle of a message when the broker drops the connection
    in_handler, release = threading.Event(), threading.Event()
    seen: list[missive.Message] = []

    def hold_first(message: missive.Message) -> None:
        seen.append(message)
        if len(seen) == 1:
            in_handler.set()
            assert release.wait(30)

    recorder = Recorder(hold_first)
    adapter = harness.adapter(missive.RawMessage, recorder.processor, concurrency=concurrency)
    with running(adapter):
        harness.publish([b"cut-off"])
        assert in_handler.wait(30)
        harness.kill_connections()
        # When the handler then acks it (its PUBACK cannot go: that connection is gone)
        release.set()
        harness.publish([b"next"])
        wait_until(lambda: b"next" in recorder.bodies, "the next message is handled")
        wait_until(lambda: recorder.bodies.count(b"cut-off") == 2, "it comes again")
    # Then it came again on the new connection, flagged as a redelivery, and was acked
    first, again = [m for m in seen if m.raw_data == b"cut-off"]
    assert (first.attributes["dup"], again.attributes["dup"]) == (False, True)
    assert again.attributes["delivery_count"] is None
    assert harness.remaining() == 0


def test_a_stopped_worker_of_a_group_keeps_its_share_for_when_it_comes_back(
    harness: MQTTHarness,
) -> None:
    # Given two workers of a group, the second of them stopped after it ran once
    one, two = Recorder(), Recorder()
    first = harness.adapter(missive.RawMessage, one.processor)
    with running(first):
        second = harness.adapter(missive.RawMessage, two.processor)
        with running(second):
            pass
        # When messages are published while only the first runs
        harness.publish([b"%d" % i for i in range(20)])
        wait_until(lambda: one.count() >= 10, "the first worker handled its share")
        time.sleep(0.3)  # room for more
        # Then Mosquitto dealt the stopped worker's share to its session, not to the first
        assert one.count() < 20
    # and the second worker gets it when it comes back
    back = Recorder()
    again = harness.adapter(missive.RawMessage, back.processor, client_id=second.client_id)
    with running(again):
        wait_until(lambda: one.count() + back.count() == 20, "every message is handled")
    assert sorted(one.bodies + back.bodies, key=int) == [b"%d" % i for i in range(20)]
