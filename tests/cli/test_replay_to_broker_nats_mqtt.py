"""``missive dlq replay --to-broker`` to NATS JetStream and MQTT, on the real servers.

The dead letters are made as in production: published to a real JetStream stream or
Mosquitto topic (each test its own, removed afterwards), consumed by the adapter with
a handler that raises, stored in an SQLite DLQ. The replayed messages are then
consumed again by the same adapter, as its workers would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import missive
from missive.adapters.mqtt import MQTTAdapter
from missive.adapters.nats import NATSJetStreamAdapter
from missive.dlq.sqlite import SQLiteDLQ
from missive.testing.conformance.support import Recorder, running, wait_until
from tests.cli.conftest import CLI, assert_one_line_error
from tests.cli.test_replay_to_broker import dead_letter, failing, replay
from tests.conformance.mqtt_harness import MQTTHarness
from tests.conformance.nats_harness import URL as NATS
from tests.conformance.nats_harness import NATSJetStreamHarness
from tests.services import require

MQTT = "mqtt://127.0.0.1:1883"


@pytest.fixture
def jetstream() -> Iterator[NATSJetStreamHarness]:
    require("nats")
    made = NATSJetStreamHarness()
    yield made
    made.close()


@pytest.fixture
def mqtt() -> Iterator[MQTTHarness]:
    require("mqtt")
    made = MQTTHarness()
    yield made
    made.close()


def nats_adapter(harness: NATSJetStreamHarness, processor: Any) -> NATSJetStreamAdapter[Any]:
    return harness.adapter(missive.RawMessage, processor, url=NATS, max_deliveries=1)


def consumed_again(adapter_for: Any) -> list[missive.Message]:
    """What the workers get now: the adapter run with a recording processor."""
    recorder = Recorder()
    with running(adapter_for(recorder.processor)):
        wait_until(lambda: recorder.messages, "the replayed message is handled")
    return list(recorder.messages)


def test_jetstream_letters_go_back_to_their_subject_with_their_id_and_headers(
    cli: CLI, tmp_path: Path, jetstream: NATSJetStreamHarness
) -> None:
    # Given a dead letter consumed from a real stream, published with a header
    path = tmp_path / "dlq.db"
    ack = jetstream.publish_one(b'{"n": 1}', headers={"tenant": "acme"})
    dead_letter(nats_adapter(jetstream, failing()), path, 1)
    # When it is replayed to the server
    result = replay(cli, path, NATS, "--all")
    # Then JetStream confirmed it and the DLQ is empty
    assert result.returncode == 0, result.stderr + result.stdout
    assert "1 confirmed and removed, 0 not sent" in result.stdout
    with SQLiteDLQ(path) as dlq:
        assert len(dlq) == 0
    # And the workers get it again: same subject, id, bytes and header, one replay
    [message] = consumed_again(lambda processor: nats_adapter(jetstream, processor))
    assert message.message_id == f"{jetstream.stream}:{ack.seq}".encode()
    assert message.raw_data == b'{"n": 1}'
    assert message.attributes["subject"] == jetstream.subject
    headers = message.attributes["headers"]
    assert headers["tenant"] == "acme"
    assert headers["x-missive-replays"] == "1"
    assert message.attributes["sequence"] > ack.seq


def test_a_letter_whose_id_jetstream_still_deduplicates_stays(
    cli: CLI, tmp_path: Path, jetstream: NATSJetStreamHarness
) -> None:
    # Given a letter published with Nats-Msg-Id a moment ago (within the window)
    path = tmp_path / "dlq.db"
    jetstream.publish_one(b"x", headers={"Nats-Msg-Id": "order-7"})
    dead_letter(nats_adapter(jetstream, failing()), path, 1)
    # When it is replayed: JetStream drops it as a duplicate of the message itself
    result = replay(cli, path, NATS, "--all")
    # Then it is kept, with one line saying why and when to try again
    assert result.returncode == 1
    [line] = [text for text in result.stdout.splitlines() if text.startswith("order-7: ")]
    assert "dropped it as a duplicate" in line
    assert "120 s" in line
    assert line.endswith("(kept)")
    with SQLiteDLQ(path) as dlq:
        assert list(dlq) == [b"order-7"]
    assert jetstream.remaining() == 0


def test_a_replay_run_again_after_lost_deletes_publishes_nothing_twice(
    cli: CLI, tmp_path: Path, jetstream: NATSJetStreamHarness
) -> None:
    # Given a letter replayed once, whose delete was then lost (as by a crash)
    path = tmp_path / "dlq.db"
    jetstream.publish_one(b"once")
    dead_letter(nats_adapter(jetstream, failing()), path, 1)
    with SQLiteDLQ(path) as dlq:
        [record] = [dlq.record(key) for key in dlq]
    assert replay(cli, path, NATS, "--all").returncode == 0
    with SQLiteDLQ(path) as dlq:
        dlq[record.message_id] = (record.message, "broken")
    # When it is replayed again within the duplicate window
    result = replay(cli, path, NATS, "--all")
    # Then it is removed as confirmed, and the stream holds it once
    assert result.returncode == 0, result.stderr + result.stdout
    assert "1 confirmed and removed" in result.stdout
    with SQLiteDLQ(path) as dlq:
        assert len(dlq) == 0
    assert jetstream.remaining() == 1


def test_a_core_nats_letter_stays(cli: CLI, tmp_path: Path) -> None:
    require("nats")
    path = tmp_path / "dlq.db"
    with SQLiteDLQ(path) as dlq:
        message = missive.RawMessage(b"m", b"core-1", {"subject": "orders", "headers": {}})
        dlq[message.message_id] = (message, "broken")
    result = replay(cli, path, NATS, "--all")
    assert result.returncode == 1
    assert "core-1: not sent: cannot be sent to a broker: it came from NATS core" in result.stdout
    with SQLiteDLQ(path) as dlq:
        assert list(dlq) == [b"core-1"]


def mqtt_adapter(harness: MQTTHarness, processor: Any) -> MQTTAdapter[Any]:
    return harness.adapter(missive.RawMessage, processor, max_deliveries=1)


def test_mqtt_letters_go_back_to_their_topic_with_their_user_properties(
    cli: CLI, tmp_path: Path, mqtt: MQTTHarness
) -> None:
    # Given a letter consumed through a shared subscription, once replayed before
    path = tmp_path / "dlq.db"
    publish = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    publish.UserProperty = [("message_id", "m-1"), ("tenant", "acme"), ("x-missive-replays", "1")]
    publish.ContentType = "application/json"
    mqtt.publish([b'{"n": 1}'], properties=publish)
    dead_letter(mqtt_adapter(mqtt, failing()), path, 1)
    # When it is replayed to the broker
    result = replay(cli, path, MQTT, "--all")
    # Then the broker acked it and the DLQ is empty
    assert result.returncode == 0, result.stderr + result.stdout
    assert "1 confirmed and removed, 0 not sent" in result.stdout
    with SQLiteDLQ(path) as dlq:
        assert len(dlq) == 0
    # And the group's worker gets it on the topic itself, its properties kept, count 2
    [message] = consumed_again(lambda processor: mqtt_adapter(mqtt, processor))
    assert (message.message_id, message.raw_data) == (b"m-1", b'{"n": 1}')
    assert message.attributes["topic"] == mqtt.topic
    assert message.attributes["user_properties"] == [
        ["message_id", "m-1"],
        ["tenant", "acme"],
        ["x-missive-replays", "2"],
    ]
    assert message.attributes["content_type"] == "application/json"


def test_an_mqtt_letter_no_session_subscribes_to_stays(
    cli: CLI, tmp_path: Path, mqtt: MQTTHarness
) -> None:
    # Given a letter from a topic no session subscribes to any more
    path = tmp_path / "dlq.db"
    topic = f"{mqtt.topic}-gone/{uuid.uuid4().hex[:8]}"
    with SQLiteDLQ(path) as dlq:
        message = missive.RawMessage(b"m", b"mqtt-1", {"topic": topic, "user_properties": []})
        dlq[message.message_id] = (message, "broken")
    # When it is replayed: the broker acks it, but with "no matching subscribers"
    result = replay(cli, path, MQTT, "--all")
    # Then it is kept, with one line saying why
    assert result.returncode == 1
    assert "mqtt-1: not sent: no subscriber" in result.stdout
    with SQLiteDLQ(path) as dlq:
        assert list(dlq) == [b"mqtt-1"]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("nats://user:secret@127.0.0.1:1", "cannot connect to NATS"),
        ("mqtt://user:secret@127.0.0.1:1", "cannot connect to MQTT"),
    ],
)
def test_an_unreachable_server_is_a_one_line_error(
    cli: CLI, tmp_path: Path, url: str, fragment: str
) -> None:
    # Given a letter for that broker, and nothing listening at the URL
    path = tmp_path / "dlq.db"
    attributes = {"subject": "s", "stream": "S", "sequence": 1, "topic": "t"}
    with SQLiteDLQ(path) as dlq:
        message = missive.RawMessage(b"m", b"m-1", attributes)
        dlq[message.message_id] = (message, "broken")
    # When it is replayed there
    result = replay(cli, path, url, "--all")
    # Then one line says so, without the password, and the letter stays
    assert_one_line_error(result, fragment, "nothing sent")
    assert "secret" not in result.stderr
    with SQLiteDLQ(path) as dlq:
        assert len(dlq) == 1
