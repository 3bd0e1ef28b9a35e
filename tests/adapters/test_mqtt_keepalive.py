"""MQTTAdapter keeps its connection alive while a handler runs longer than the keepalive.

The delivery loop's thread drives paho's socket; while it is away in a handler, the
transport's keeper thread sends the pings. Mosquitto closes a connection that sent
nothing for 1.5 keepalive periods (2.0.11 checks every few seconds: 7 s is past it),
so without the keeper the message below would be acked on a connection already
closed, and come again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import missive
from missive.testing.conformance.support import Recorder, RecordingObserver, running, wait_until
from tests.conformance.mqtt_harness import MQTTHarness
from tests.services import require


@pytest.fixture
def harness() -> Iterator[MQTTHarness]:
    require("mqtt")
    h = MQTTHarness()
    yield h
    h.close()


def test_a_handler_longer_than_the_keepalive_keeps_the_connection(harness: MQTTHarness) -> None:
    # Given a one-second keepalive and a handler that takes seven seconds on its first message
    def slow_first(message: missive.Message) -> None:
        if message.raw_data == b"slow":
            time.sleep(7.0)

    recorder = Recorder(slow_first)
    adapter = harness.adapter(missive.RawMessage, recorder.processor, keepalive=1)
    observer = RecordingObserver()
    adapter.add_observer(observer)
    # When it handles that message, and another one published meanwhile
    with running(adapter):
        harness.publish([b"slow"])
        wait_until(lambda: "handling_started" in observer.events(), "the slow one is started")
        harness.publish([b"after"])
        wait_until(lambda: len(recorder.bodies) >= 2, "both are handled")
        time.sleep(2.0)  # a dropped connection would be seen, and "slow" come again
    # Then the connection never dropped, and each was handled and acked once
    assert recorder.bodies == [b"slow", b"after"]
    assert "connection_lost" not in observer.events()
    assert observer.events().count("acked") == 2
    assert harness.remaining() == 0
