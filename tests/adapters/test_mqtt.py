"""MQTTAdapter against the real Mosquitto on 127.0.0.1:1883: the suites, then specifics.

Each test uses its own topic, group and client ids (random suffix); its sessions and
retained messages are removed afterwards. Sessions, restarts and failures are in
``test_mqtt_sessions.py``; a broker restart in ``test_mqtt_restart.py``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import missive
from missive.adapters.mqtt import DEFAULT_URL, MQTTAdapter
from missive.testing.conformance.adapter_suite import AdapterSuite
from missive.testing.conformance.events_suite import EventsSuite
from missive.testing.conformance.harness import WithOptions
from missive.testing.conformance.support import Recorder, running, wait_until
from tests.conformance.mqtt_harness import MQTTHarness
from tests.services import require


@pytest.fixture
def harness() -> Iterator[MQTTHarness]:
    require("mqtt")
    h = MQTTHarness()
    yield h
    h.close()


class TestMQTTConformance(AdapterSuite, EventsSuite):
    """Every test of the adapter and events suites, on MQTT 5."""


class TestMQTTConcurrentConformance(AdapterSuite, EventsSuite):
    """The same suites with eight messages in flight (``concurrency=8``)."""

    @pytest.fixture
    def harness(self, harness: MQTTHarness) -> WithOptions:
        return WithOptions(harness, concurrency=8)


class TestMQTT311Conformance(AdapterSuite, EventsSuite):
    """The same suites on MQTT 3.1.1 (no user properties, no session expiry)."""

    @pytest.fixture
    def harness(self) -> Iterator[MQTTHarness]:
        require("mqtt")
        h = MQTTHarness(protocol="3.1.1")
        yield h
        h.close()

    def test_5000_messages_are_each_handled_once(self, harness: MQTTHarness) -> None:
        pytest.skip(
            "a 3.1.1 subscriber cannot ask for a window: Mosquitto's defaults "
            "(max_inflight_messages 20, max_queued_messages 1000) drop part of a 5,000 "
            "burst published faster than it is handled (docs/mqtt.md, broker settings)"
        )


# -- MQTT specifics ----------------------------------------------------------------------


def properties(**values: Any) -> Properties:
    publish = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(publish, name, value)
    return publish


def test_a_message_carries_the_topic_qos_retain_flag_and_user_properties(
    harness: MQTTHarness,
) -> None:
    # Given an MQTT 5 message with user properties (one name twice), a content type,
    # a response topic and correlation data
    recorder = Recorder()
    adapter = harness.adapter(missive.RawMessage, recorder.processor)
    pairs = [("source", "billing"), ("tag", "a"), ("tag", "b")]
    with running(adapter):
        publish = properties(
            UserProperty=pairs,
            ContentType="application/json",
            ResponseTopic="replies/1",
            CorrelationData=b"\x00corr",
        )
        harness.publish([b"{}"], properties=publish)
        wait_until(lambda: recorder.count() == 1, "the message is handled")
    # Then its attributes say all of it; without a publisher id, the id is generated
    [message] = recorder.messages
    attributes = dict(message.attributes)
    assert attributes.pop("mid") >= 1
    assert attributes == {
        "topic": harness.topic,
        "qos": 1,
        "retain": False,
        "dup": False,
        "client_id": adapter.client_id,
        "delivery_count": 1,
        "publisher_id": False,
        "headers": {"source": "billing", "tag": "b"},
        "user_properties": [["source", "billing"], ["tag", "a"], ["tag", "b"]],
        "content_type": "application/json",
        "response_topic": "replies/1",
        "correlation_data": b"\x00corr",
    }
    assert message.message_id


def test_the_message_id_user_property_is_the_id_and_a_header_matcher_sees_it(
    harness: MQTTHarness,
) -> None:
    # Given a handler routed by a user property, through the Header matcher
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    seen: list[missive.RawMessage] = []

    @processor.handle_for(missive.matchers.Header("kind").equals("invoice"))
    def invoices(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        seen.append(message)
        ctx.ack()

    with running(harness.adapter(missive.RawMessage, processor)):
        # When a message with a message_id and that property comes
        harness.publish(
            [b"x"],
            properties=properties(UserProperty=[("message_id", "inv-7"), ("kind", "invoice")]),
        )
        wait_until(lambda: seen, "the message is handled")
    # Then its id is the publisher's, marked as such
    [message] = seen
    assert message.message_id == b"inv-7"
    assert message.attributes["publisher_id"] is True


def test_a_retained_message_comes_with_the_retain_flag_on_a_new_subscription(
    harness: MQTTHarness,
) -> None:
    # Given a retained message on a topic, and a worker that never subscribed to it
    topic = f"{harness.topic}/state"
    harness.publish([b"last known"], topic=topic, retain=True)
    recorder = Recorder()
    adapter = harness.adapter(
        missive.RawMessage,
        recorder.processor,
        topics=topic,
        group=None,
        client_id="r" + harness.suffix,
    )
    # When it subscribes, and later reconnects (its subscription then exists)
    with running(adapter):
        wait_until(lambda: recorder.count() == 1, "the retained message is handled")
        harness.kill_connections()
        harness.publish([b"live"], topic=topic)
        wait_until(lambda: recorder.count() == 2, "the live message is handled")
        time.sleep(0.3)  # room for a wrong second retained delivery
    # Then the retained one had the flag, once; the live one did not
    assert recorder.bodies == [b"last known", b"live"]
    assert [m.attributes["retain"] for m in recorder.messages] == [True, False]


def test_wildcards_subscribe_to_every_matching_topic_and_no_other(harness: MQTTHarness) -> None:
    # Given an adapter on "<topic>/+/created" and "<topic>/audit/#"
    recorder = Recorder()
    filters = [f"{harness.topic}/+/created", f"{harness.topic}/audit/#"]
    with running(harness.adapter(missive.RawMessage, recorder.processor, topics=filters)):
        # When messages are published to matching and other topics
        for name in ["orders/created", "users/created", "orders/deleted", "audit/a/b", "audits"]:
            harness.publish([name.encode()], topic=f"{harness.topic}/{name}")
        wait_until(lambda: recorder.count() == 3, "the matching messages are handled")
        time.sleep(0.3)  # room for a wrong delivery
    # Then exactly the matching ones came, each with its own topic
    assert sorted(recorder.bodies) == [b"audit/a/b", b"orders/created", b"users/created"]
    assert {m.attributes["topic"] for m in recorder.messages} == {
        f"{harness.topic}/{m.raw_data.decode()}" for m in recorder.messages
    }


def test_without_a_group_every_worker_gets_every_message(harness: MQTTHarness) -> None:
    # Given two workers (sessions of their own) on the topic, without a shared subscription
    one, two = Recorder(), Recorder()
    options: dict[str, Any] = {"group": None}
    with (
        running(
            harness.adapter(
                missive.RawMessage, one.processor, client_id="a" + harness.suffix, **options
            )
        ),
        running(
            harness.adapter(
                missive.RawMessage, two.processor, client_id="b" + harness.suffix, **options
            )
        ),
    ):
        # When ten messages are published
        harness.publish([b"%d" % i for i in range(10)])
        wait_until(lambda: one.count() == two.count() == 10, "each worker handled all")
    # Then each saw all ten, in order
    assert one.bodies == two.bodies == [b"%d" % i for i in range(10)]


def test_a_shared_subscription_shares_the_messages_between_three_workers(
    harness: MQTTHarness,
) -> None:
    # Given three workers in one group
    recorders = [Recorder(lambda m: time.sleep(0.001)) for _ in range(3)]
    adapters = [harness.adapter(missive.RawMessage, r.processor) for r in recorders]
    with running(adapters[0]), running(adapters[1]), running(adapters[2]):
        # When 300 messages are published
        harness.publish([b"%d" % i for i in range(300)])
        wait_until(lambda: sum(r.count() for r in recorders) >= 300, "every message is handled")
        time.sleep(0.3)  # room for a wrong duplicate
    # Then each worker took a share, and each message was handled once
    assert all(r.count() > 0 for r in recorders)
    assert sorted(b for r in recorders for b in r.bodies) == sorted(b"%d" % i for i in range(300))
    assert len({a.client_id for a in adapters}) == 3


def test_mqtt_3_1_1_delivers_without_user_properties(harness: MQTTHarness) -> None:
    # Given an MQTT 3.1.1 adapter
    recorder = Recorder()
    adapter = harness.adapter(missive.RawMessage, recorder.processor, protocol="3.1.1")
    with running(adapter):
        # When a message with user properties is published (by an MQTT 5 client)
        harness.publish([b"old"], properties=properties(UserProperty=[("message_id", "m1")]))
        wait_until(lambda: recorder.count() == 1, "the message is handled")
    # Then it arrives, without the MQTT 5 properties (3.1.1 has none): a generated id
    [message] = recorder.messages
    assert message.raw_data == b"old"
    assert message.attributes["headers"] == {}
    assert message.attributes["publisher_id"] is False
    assert message.message_id != b"m1"


def test_payloads_stay_out_of_logs_at_info_and_above(
    harness: MQTTHarness, caplog: pytest.LogCaptureFixture
) -> None:
    # Given handlers that fail in every way that logs, with a secret in the payload
    processor: missive.Processor[missive.RawMessage] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def fail(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        raise ValueError(message.raw_data.decode())

    processor.set_dlq({})
    caplog.set_level(logging.INFO)
    adapter = harness.adapter(missive.RawMessage, processor)
    with running(adapter):
        harness.publish([b"SECRET-PAYLOAD"])
        wait_until(lambda: harness.remaining() == 0, "the message is dead-lettered and acked")
        harness.kill_connections()  # a reconnection logs too
        wait_until(lambda: "reconnecting" in caplog.text, "the reconnection is logged")
    # Then no record at INFO or above quotes it
    assert all("SECRET-PAYLOAD" not in r.getMessage() for r in caplog.records)


def test_settings_are_checked_and_the_url_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    for bad, match in [
        ({"topics": []}, "at least one topic"),
        ({"topics": "t", "group": "a/b"}, "group"),
        ({"topics": "t", "protocol": "3.1"}, "protocol"),
        ({"topics": "t", "session_expiry": 0}, "session_expiry"),
        ({"topics": "t", "receive_maximum": 70000}, "receive_maximum"),
        ({"topics": "t", "url": "http://example.invalid"}, "mqtt://"),
    ]:
        with pytest.raises(ValueError, match=match):
            MQTTAdapter(missive.RawMessage, processor, **bad)
    monkeypatch.setenv("MQTT_URL", "mqtts://u:p%40ss@example.invalid")
    adapter = MQTTAdapter(missive.RawMessage, processor, "t", group="g", concurrency=80)
    assert (adapter.host, adapter.port, adapter.username, adapter.password) == (
        "example.invalid",
        8883,
        "u",
        "p@ss",
    )
    assert adapter.tls is not None
    assert adapter.subscriptions == ("$share/g/t",)
    assert adapter.receive_maximum == 160
    adapter.concurrency = 200  # as `missive run --concurrency 200` does
    assert adapter.receive_maximum == 400
    assert adapter.shareable  # a group: `missive run --workers N` shares the topics
    assert "p@ss" not in adapter.transport().where()
    monkeypatch.delenv("MQTT_URL")
    monkeypatch.setenv("MISSIVE_WORKER", "3")
    adapter = MQTTAdapter(missive.RawMessage, processor, "t")
    assert adapter.url == DEFAULT_URL
    assert adapter.client_id.startswith("missive-")
    assert adapter.client_id.endswith("-3")
    assert not adapter.shareable  # no group: every worker would get every message


def test_importing_the_adapter_without_paho_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["paho"] = None
        try:
            import missive.adapters.mqtt
        except Exception as exc:
            import missive
            assert isinstance(exc, missive.MissingExtraError), type(exc)
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'missive[mqtt]'" in result.stdout
