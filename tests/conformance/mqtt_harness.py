"""The conformance harness for MQTT, on the Mosquitto at 127.0.0.1:1883 (``MQTT_URL``).

Each harness owns one topic ``missive-test/<suffix>``, shared in the group ``g<suffix>``
(``$share/g<suffix>/missive-test/<suffix>``). A worker's identity is its client id, and
its session is its queue:

* the first client id's session is made when the harness is (as a queue is declared),
  so that what is published before any adapter runs is kept;
* ``adapter()`` gives an adapter the client id of a worker that is not running any
  more (a restarted worker finds its session), else a new one (a second worker).

``remaining()`` asks the broker when no adapter of the harness runs: it resumes each
session without acknowledging anything and counts what the broker sends (which sets
DUP on them). While one runs, resuming its session would disconnect it, so it counts
what was published and not acked by an adapter (its ``acked`` events).
``kill_connections()`` connects with each running adapter's client id: the broker drops
the adapter's connection (session taken over), and the adapter reconnects.
``close()`` removes every session and clears retained messages the test left.

Mosquitto's defaults bound what it keeps per session beyond the in-flight window
(``max_queued_messages 1000``): the adapters ask for a window of 10,000 (MQTT 5), so
that a burst waits in the adapter rather than being dropped.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import missive
from missive.adapters._mqtt_session import parse_url
from missive.adapters.mqtt import MQTTAdapter
from missive.events import Observer
from missive.testing.conformance.harness import (
    CONSUMER_GROUPS,
    EXTERNAL_PUBLISHER,
    KILL_CONNECTION,
    PATTERNS,
    PERSISTENCE,
)

URL = os.environ.get("MQTT_URL", "mqtt://127.0.0.1:1883")
HOST, PORT, *_ = parse_url(URL)
#: Test sessions expire on their own after this long, should close() not run.
SESSION_EXPIRY = 300
#: The MQTT 5 window the harness's adapters ask for.
RECEIVE_MAXIMUM = 10_000
V2 = CallbackAPIVersion.VERSION2


def mosquitto_pub(*args: str, stdin: bytes) -> None:
    """Run ``mosquitto_pub ARGS -s``: the message is ``stdin``, byte for byte."""
    if shutil.which("mosquitto_pub") is None:
        problem = "mosquitto_pub is not installed: apt-get install mosquitto-clients"
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    subprocess.run(
        ["mosquitto_pub", "-h", HOST, "-p", str(PORT), *args, "-s"],
        input=stdin,
        check=True,
        timeout=30,
        capture_output=True,
    )


def connected(
    client_id: str = "", on_message: Callable[..., None] | None = None, **connect: Any
) -> mqtt.Client:
    """A v5 client with ``client_id``, connected (CONNACK received), its loop running.

    Manual acks: it never acknowledges what a session sends it (to ``on_message``).
    """
    client = mqtt.Client(V2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_message = on_message
    answered = threading.Event()
    client.on_connect = lambda *args: answered.set()
    client.connect(HOST, PORT, **connect)
    client.loop_start()
    assert answered.wait(10), "no CONNACK from Mosquitto"
    return client


def resume(client_id: str, on_message: Callable[..., None] | None = None) -> mqtt.Client:
    """Connect to ``client_id``'s session (kept, with the tests' expiry), acking nothing."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = SESSION_EXPIRY
    properties.ReceiveMaximum = 65535
    return connected(client_id, on_message, clean_start=False, properties=properties)


def stop(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


class _AckCounter(Observer):
    """Counts the bodies adapters acked (handled or dead-lettered)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bodies: collections.Counter[bytes] = collections.Counter()

    def acked(self, message: missive.Message) -> None:
        with self.lock:
            self.bodies[message.raw_data] += 1


class MQTTHarness:
    """One topic shared in one group; each worker a client id with a persistent session."""

    name = "mqtt"
    capabilities = frozenset(
        {PERSISTENCE, CONSUMER_GROUPS, PATTERNS, KILL_CONNECTION, EXTERNAL_PUBLISHER}
    )

    def __init__(self, protocol: str = "5") -> None:
        self.protocol = protocol
        self.name = f"mqtt {protocol}"
        self.suffix = uuid.uuid4().hex[:12]
        self.topic = f"missive-test/{self.suffix}"
        self.group = f"g{self.suffix}"
        #: Every client id handed out, and the adapter that has it now.
        self.workers: dict[str, missive.Adapter[Any] | None] = {}
        #: Topics a test published retained messages to: cleared by close().
        self.retained: set[str] = set()
        self.published: collections.Counter[bytes] = collections.Counter()
        self.counter = _AckCounter()
        self._counted: list[missive.Processor[Any]] = []  # those the counter observes
        self.publisher = connected()
        # The first worker's session, as a queue would be declared before publishing.
        first = self.options(self.client_id())
        MQTTAdapter(missive.RawMessage, missive.Processor(), **first).create_session()

    def client_id(self) -> str:
        """The client id of a worker not running any more, else a new one."""
        for client_id, adapter in self.workers.items():
            if adapter is None or adapter.stop_requested:
                return client_id
        client_id = f"missive-test-{self.suffix}-{len(self.workers) + 1}"
        self.workers[client_id] = None
        return client_id

    def options(self, client_id: str, **options: Any) -> dict[str, Any]:
        options.setdefault("topics", self.topic)
        options.setdefault("group", self.group)
        options.setdefault("url", URL)
        options.setdefault("client_id", client_id)
        options.setdefault("protocol", self.protocol)
        options.setdefault("session_expiry", SESSION_EXPIRY)
        options.setdefault("max_reconnect_delay", 0.5)
        options.setdefault("connect_timeout", 5.0)
        # Mosquitto's default max_queued_messages (1000) drops what a connected
        # subscriber's window leaves queued beyond it: the suite's 5,000-message burst
        # waits in the adapter instead (MQTT 5 only; 3.1.1 cannot ask for a window).
        options.setdefault("receive_maximum", RECEIVE_MAXIMUM)
        return options

    def adapter(
        self, message_cls: type[missive.Message], processor: missive.Processor[Any], **options: Any
    ) -> MQTTAdapter[Any]:
        client_id = options.pop("client_id", None) or self.client_id()
        adapter = MQTTAdapter(message_cls, processor, **self.options(client_id, **options))
        self.workers[client_id] = adapter
        if not any(counted is processor for counted in self._counted):
            self._counted.append(processor)
            processor.add_observer(self.counter)
        return adapter

    def publish(self, bodies: Iterable[bytes], topic: str | None = None, **options: Any) -> None:
        """Publish at QoS 1 (by default) and wait until Mosquitto has each message."""
        infos = []
        for body in bodies:
            infos.append(self.publisher.publish(topic or self.topic, body, **{"qos": 1, **options}))
            self.published[body] += 1
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published(), "Mosquitto did not take a message in 10 s"
        if options.get("retain"):
            self.retained.add(topic or self.topic)

    def publish_external(self, body: bytes) -> None:
        mosquitto_pub("-t", self.topic, "-q", "1", "-V", "mqttv5", stdin=body)
        self.published[body] += 1

    def remaining(self) -> int:
        if any(a is not None and a._delivery is not None for a in self.workers.values()):
            with self.counter.lock:
                acked = self.counter.bodies
                return sum(max(0, n - acked[b]) for b, n in self.published.items())
        return sum(self.held(client_id) for client_id in self.workers)

    def held(self, client_id: str, quiet: float = 0.3) -> int:
        """How many messages ``client_id``'s session holds (none acked), by resuming it."""
        received: list[bytes] = []
        client = resume(client_id, lambda c, u, message: received.append(message.payload))
        try:
            count, deadline = -1, time.monotonic() + 10
            while count != len(received) and time.monotonic() < deadline:
                count = len(received)
                time.sleep(quiet)
        finally:
            stop(client)
        return len(received)

    def kill_connections(self) -> None:
        running = [c for c, a in self.workers.items() if a is not None and a._delivery is not None]
        assert running, "no adapter of this test is connected"
        for client_id in running:
            stop(resume(client_id))  # the broker drops the adapter's connection

    def close(self) -> None:
        try:
            for topic in self.retained:
                self.publisher.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
            for client_id in self.workers:
                # A clean start with no expiry: the session goes when this connection does.
                stop(connected(client_id, clean_start=True))
        finally:
            stop(self.publisher)
