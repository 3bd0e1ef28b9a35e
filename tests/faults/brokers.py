"""The brokers under test, each bound to one scenario's own queue or stream.

Each publishes in batches (RabbitMQ: persistent messages in AMQP transactions of
:data:`BATCH`; Redis: pipelines; NATS: core publishes with a round trip per batch;
MQTT: QoS 1, every PUBACK awaited), says how many messages it still holds, kills its
workers' connections (server-side; NATS: at a proxy; MQTT: not at all), and gives
the environment that points a worker from ``apps.py`` at it. ``close`` deletes what
it created.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import redis
from nats.js import api as nats_api
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import missive
from missive.adapters._nats_common import round_trip as nats_round_trip
from missive.adapters._rabbitmq_delays import delay_queue, levels_up_to
from tests.adapters.test_rabbitmq import URL as AMQP_URL
from tests.adapters.test_rabbitmq import rabbitmqctl
from tests.conformance.nats_harness import URL as NATS_URL
from tests.conformance.nats_harness import Client as NATSClient
from tests.conformance.redis_harness import URL as REDIS_URL
from tests.conformance.redis_harness import RedisStreamsHarness
from tests.faults.proxy import TCPProxy

#: How many messages one publishing round trip carries.
BATCH = 1000
#: The messages an MQTT publish waits for at a time (below paho's 65,535 packet ids).
MQTT_CHUNK = 10_000
#: The delay queues a RabbitMQ scenario's policy may use (none waits over 64 s).
DELAY_LEVELS = levels_up_to(64)


class RabbitBroker:
    """A durable queue ``missive-faults-<suffix>`` (classic, or quorum to count deliveries)."""

    name = "RabbitMQ"
    app = "tests.faults.apps:rabbitmq_worker"

    def __init__(self, queue_type: str = "classic") -> None:
        suffix = uuid.uuid4().hex[:12]
        self.queue = f"missive-faults-{suffix}"
        #: The connection name of every worker, which ``kill_connections`` looks for.
        self.connection_name = f"missive-faults {suffix}"
        self.url = AMQP_URL
        self.queue_type = queue_type
        self._connection: pika.BlockingConnection | None = None
        self._channel().queue_declare(
            self.queue, durable=True, arguments={"x-queue-type": queue_type}
        )

    def _channel(self) -> pika.adapters.blocking_connection.BlockingChannel:
        # A new connection when the last one died (the broker restarted, say).
        if self._connection is None or not self._connection.is_open:
            self._connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
            self._tx_channel = self._connection.channel()
            self._tx_channel.tx_select()
        return self._tx_channel

    def publish(self, bodies: Sequence[bytes], ids: Sequence[str]) -> list[bytes]:
        """Publish persistent messages with these AMQP message ids; committed by the broker."""
        channel = self._channel()
        for start in range(0, len(bodies), BATCH):
            for body, message_id in zip(
                bodies[start : start + BATCH], ids[start : start + BATCH], strict=True
            ):
                channel.basic_publish(
                    "",
                    self.queue,
                    body,
                    pika.BasicProperties(message_id=message_id, delivery_mode=2),
                )
            channel.tx_commit()
        return [message_id.encode() for message_id in ids]

    def remaining(self) -> int:
        """Messages ready in the queue (unacked ones in a worker's hands not counted),
        and those waiting for a delayed retry in its delay queues."""
        try:
            frame = self._channel().queue_declare(self.queue, passive=True)
        except pika.exceptions.AMQPError:  # a connection from before a broker restart
            self._connection = None
            frame = self._channel().queue_declare(self.queue, passive=True)
        return int(frame.method.message_count) + self.waiting()

    def waiting(self) -> int:
        """Messages in the queue's delay queues (those the workers declared so far)."""
        total = 0
        for seconds in DELAY_LEVELS:
            channel = self._channel().connection.channel()
            try:
                frame = channel.queue_declare(delay_queue(self.queue, seconds), passive=True)
            except pika.exceptions.ChannelClosedByBroker:  # 404: not declared (yet)
                continue
            total += int(frame.method.message_count)
            channel.close()
        return total

    def kill_connections(self, at_least: int = 1) -> int:
        """Close every worker connection from the broker's side; how many there were.

        None if there are fewer than ``at_least`` (0 is returned): workers still
        reconnecting after the last kill are waited for, not killed one by one.
        """
        marker = f'{{"connection_name","{self.connection_name}"}}'
        rows = rabbitmqctl("list_connections", "pid", "client_properties")
        pids = [pid for pid, properties in rows if marker in properties]
        if len(pids) < at_least:
            return 0
        for pid in pids:
            subprocess.run(
                ["rabbitmqctl", "close_connection", pid, "killed by a fault-injection test"],
                capture_output=True,
                timeout=60,
                check=False,  # it may have gone already
            )
        return len(pids)

    def env(self, url: str | None = None) -> dict[str, str]:
        """The environment that points a worker at this queue (through ``url`` if given)."""
        return {
            "FAULT_URL": url or self.url,
            "FAULT_TARGET": self.queue,
            "FAULT_NAME": self.connection_name,
        }

    def proxied_url(self, port: int) -> str:
        """This broker's URL through a proxy listening on ``port``."""
        return f"amqp://guest:guest@127.0.0.1:{port}/%2F"

    @property
    def port(self) -> int:
        return 5672

    def close(self) -> None:
        with contextlib.suppress(pika.exceptions.AMQPError):
            self.remaining()  # reconnects if need be
            self._channel().queue_delete(self.queue)
            for seconds in DELAY_LEVELS:
                self._channel().queue_delete(delay_queue(self.queue, seconds))
        if self._connection is not None and self._connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                self._connection.close()


def restart_rabbitmq() -> float:
    """``rabbitmqctl stop_app``, then ``start_app`` (always), then wait until it serves.

    Returns how many seconds the broker was down. Whatever fails, the application
    is started again and awaited before this returns or raises.
    """
    started = time.monotonic()
    try:
        rabbitmqctl("stop_app")
        time.sleep(2)
    finally:
        subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, timeout=120, check=False)
        subprocess.run(
            ["rabbitmqctl", "await_startup"], capture_output=True, timeout=120, check=False
        )
        _wait_for_amqp(120)
    return time.monotonic() - started


def _wait_for_amqp(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
            return
        except pika.exceptions.AMQPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class StreamsBroker(RedisStreamsHarness):
    """The conformance harness's stream and group, publishing in pipelines that return ids.

    On the shared Redis by default, or on the Redis at ``url`` (a test's own server).
    """

    name = "Redis Streams"
    app = "tests.faults.apps:streams_worker"

    def __init__(self, url: str = REDIS_URL) -> None:
        super().__init__()
        self.url = url
        if url != REDIS_URL:  # the harness's client points at the shared Redis
            self.client.close()
            self.client = redis.Redis.from_url(url)
        self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)

    def publish(self, bodies: Sequence[bytes], ids: Sequence[str]) -> list[bytes]:  # type: ignore[override]
        """XADD each body; the entry ids (the messages' ids) in order. ``ids`` is unused."""
        entry_ids: list[bytes] = []
        with self.client.pipeline(transaction=False) as pipe:
            for start in range(0, len(bodies), BATCH):
                for body in bodies[start : start + BATCH]:
                    pipe.xadd(self.stream, {"data": body})
                entry_ids.extend(pipe.execute())
        return entry_ids

    def waiting(self) -> int:
        """Entries waiting for a delayed retry in the group's sorted set."""
        return int(self.client.zcard(self.delayed))

    def kill_connections(self, at_least: int = 1) -> int:  # type: ignore[override]
        """CLIENT KILL every worker connection; how many there were (see RabbitBroker's)."""
        ids = [c["id"] for c in self.client.client_list() if c.get("name") == self.client_name]
        if len(ids) < at_least:
            return 0
        for client_id in ids:
            with contextlib.suppress(redis.ResponseError):  # it may have gone already
                self.client.client_kill_filter(_id=client_id)
        return len(ids)

    def env(self, url: str | None = None) -> dict[str, str]:
        """The environment that points a worker at this stream (through ``url`` if given)."""
        return {
            "FAULT_URL": url or self.url,
            "FAULT_TARGET": self.stream,
            "FAULT_GROUP": self.group,
            "FAULT_NAME": self.client_name,
        }

    def proxied_url(self, port: int) -> str:
        """This broker's URL through a proxy listening on ``port``."""
        return f"redis://127.0.0.1:{port}/0"

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or 6379


class JetStreamBroker:
    """A work-queue stream ``missive-faults-<suffix>`` (file storage) on the subject
    ``missive.faults.<suffix>``, read by the durable consumer ``durable-<suffix>``.

    On the shared NATS by default, or on the nats-server at ``url`` (a test's own).
    The durable consumer is created here, before the workers share it, with an
    ``ack_wait`` of :attr:`ACK_WAIT` (the adapters use an existing consumer as it
    is): what a killed worker held comes back after that long. Each message carries
    its id as ``Nats-Msg-Id``, the adapter's ``message_id``. The workers connect
    through a :class:`~tests.faults.proxy.TCPProxy` of this broker's: nats-server 2.9
    has no call to kick a client, so ``kill_connections`` resets theirs there.
    """

    name = "NATS JetStream"
    app = "tests.faults.apps:nats_worker"
    #: The durable consumer's ack_wait, in seconds.
    ACK_WAIT = 3.0

    def __init__(self, url: str = NATS_URL) -> None:
        suffix = uuid.uuid4().hex[:12]
        self.stream = f"missive-faults-{suffix}"
        self.subject = f"missive.faults.{suffix}"
        self.durable = f"durable-{suffix}"
        self.connection_name = f"missive-faults {suffix}"
        self.url = url
        self.published = 0
        self.client = NATSClient(url)
        self.proxy = TCPProxy(self.port).__enter__()
        try:
            self.client.run(
                self.client.jsm.add_stream(
                    name=self.stream,
                    subjects=[self.subject],
                    retention=nats_api.RetentionPolicy.WORK_QUEUE,
                    storage=nats_api.StorageType.FILE,
                )
            )
            self.client.run(
                self.client.jsm.add_consumer(
                    self.stream,
                    nats_api.ConsumerConfig(
                        name=self.durable,
                        durable_name=self.durable,
                        ack_policy=nats_api.AckPolicy.EXPLICIT,
                        ack_wait=self.ACK_WAIT,
                        max_deliver=-1,  # the adapters' max_deliveries applies
                        deliver_policy=nats_api.DeliverPolicy.ALL,
                    ),
                )
            )
        except BaseException:
            self.close()
            raise

    def publish(self, bodies: Sequence[bytes], ids: Sequence[str]) -> list[bytes]:
        """Publish each body with its id as ``Nats-Msg-Id`` (core publishes, a round trip
        every :data:`BATCH`), then wait until the stream stored them all."""
        nc = self.client.nc

        async def publish() -> None:
            for start in range(0, len(bodies), BATCH):
                for body, message_id in zip(
                    bodies[start : start + BATCH], ids[start : start + BATCH], strict=True
                ):
                    await nc.publish(self.subject, body, headers={"Nats-Msg-Id": message_id})
                await nats_round_trip(nc)

        self.client.run(publish())
        self.published += len(bodies)
        deadline = time.monotonic() + 60 + len(bodies) / 1000
        while self._info().state.last_seq < self.published:
            assert time.monotonic() < deadline, "the stream did not store every message"
            time.sleep(0.01)
        return [message_id.encode() for message_id in ids]

    def _info(self) -> Any:
        return self.client.run(self.client.jsm.stream_info(self.stream))

    def remaining(self) -> int:
        """Messages still in the stream (a work queue deletes each once acked); -1 while
        the server does not answer (restarting)."""
        try:
            return int(self._info().state.messages)
        except Exception:
            return -1

    def kill_connections(self, at_least: int = 1) -> int:
        """Reset every worker connection at the proxy; how many there were (see
        RabbitBroker's: none if fewer than ``at_least``)."""
        connections = self.proxy.open_connections
        if connections < at_least:
            return 0
        self.proxy.cut(0)
        return connections

    def env(self, url: str | None = None) -> dict[str, str]:
        """The environment that points a worker at this stream's durable consumer, through
        this broker's proxy (or through ``url`` if given)."""
        return {
            "FAULT_URL": url or self.proxied_url(self.proxy.port),
            "FAULT_TARGET": self.stream,
            "FAULT_GROUP": self.durable,
            "FAULT_NAME": self.connection_name,
        }

    def proxied_url(self, port: int) -> str:
        """This server's URL through a proxy listening on ``port``."""
        return f"nats://127.0.0.1:{port}"

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or 4222

    def close(self) -> None:
        try:
            with contextlib.suppress(Exception):
                self.client.run(self.client.jsm.delete_stream(self.stream))
        finally:
            self.proxy.close()
            self.client.close()


class MQTTBroker:
    """A topic ``missive-faults/<suffix>`` shared in the group ``g<suffix>`` on the
    Mosquitto at ``url`` (a test's own: see ``mosquitto_server.py``).

    A worker's queue is its session, named by its client id ``missive-faults-<suffix>-<k>``
    (``apps.mqtt_worker`` takes the lowest ``k`` no live worker has). The sessions of
    the first :attr:`SESSIONS` workers are made here, before publishing, as queues
    are declared: Mosquitto deals a shared subscription's messages round-robin
    between its sessions, so N is split between them. Each message carries its id
    in the ``message_id`` user property (MQTT 5), the adapter's ``message_id``.
    """

    name = "MQTT (Mosquitto)"
    app = "tests.faults.apps:mqtt_worker"
    #: The sessions made before publishing, one per worker that runs at a time.
    SESSIONS = 2

    def __init__(self, url: str) -> None:
        from missive.adapters.mqtt import MQTTAdapter

        suffix = uuid.uuid4().hex[:12]
        self.topic = f"missive-faults/{suffix}"
        self.group = f"g{suffix}"
        self.client_prefix = f"missive-faults-{suffix}"
        self.url = url
        for k in range(1, self.SESSIONS + 1):
            MQTTAdapter(
                missive.RawMessage,
                missive.Processor(),
                self.topic,
                group=self.group,
                url=url,
                client_id=f"{self.client_prefix}-{k}",
            ).create_session()
        self.publisher = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{self.client_prefix}-publisher",
            protocol=mqtt.MQTTv5,
        )  # fmt: skip
        self.publisher.max_inflight_messages_set(100)
        self.publisher.connect("127.0.0.1", self.port)
        self.publisher.loop_start()

    def publish(self, bodies: Sequence[bytes], ids: Sequence[str]) -> list[bytes]:
        """Publish at QoS 1, each with its ``message_id``; Mosquitto has each on return.

        In chunks, each acknowledged before the next: packet ids are 16 bits, and paho
        refuses a publish whose id is still in flight (ERR_QUEUE_SIZE) past 65,535.
        """
        for start in range(0, len(bodies), MQTT_CHUNK):
            infos = []
            end = start + MQTT_CHUNK
            for body, message_id in zip(bodies[start:end], ids[start:end], strict=True):
                properties = Properties(PacketTypes.PUBLISH)
                properties.UserProperty = [("message_id", message_id)]
                infos.append(
                    self.publisher.publish(self.topic, body, qos=1, properties=properties)
                )
            for info in infos:
                info.wait_for_publish(60)
                assert info.is_published(), "Mosquitto did not take a message in 60 s"
        return [message_id.encode() for message_id in ids]

    def remaining(self) -> int:
        """0: while the workers hold their sessions, Mosquitto cannot say what they hold.

        (``$SYS/broker/store/messages/count``, less the retained ``$SYS`` messages, was
        tried: after a restart it stays above 0, 2 at N = 2000, while every session
        is empty when resumed; measured on Mosquitto 2.0.11.) So ``wait_done`` waits
        for every id to be accounted for and a quiet second, and each MQTT test then
        checks :meth:`held` once the workers have stopped.
        """
        return 0

    def held(self, sessions: int) -> int:
        """How many messages the sessions of the first ``sessions`` client ids still hold,
        by resuming each (acking nothing) once the workers stopped."""
        host, port = "127.0.0.1", self.port
        held = 0
        for k in range(1, max(sessions, self.SESSIONS) + 1):
            client_id = f"{self.client_prefix}-{k}"
            received: list[bytes] = []
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 300
            properties.ReceiveMaximum = 65535
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                manual_ack=True,
            )  # fmt: skip
            client.on_message = lambda c, u, message: received.append(message.payload)  # noqa: B023
            client.connect(host, port, clean_start=False, properties=properties)
            client.loop_start()
            try:
                count, deadline = -1, time.monotonic() + 10
                while count != len(received) and time.monotonic() < deadline:
                    count = len(received)
                    time.sleep(0.5)
            finally:
                client.disconnect()
                client.loop_stop()
            held += len(received)
        return held

    def kill_connections(self, at_least: int = 1) -> int:
        raise NotImplementedError("no MQTT scenario kills connections (issue 15 asks for none)")

    def env(self, url: str | None = None) -> dict[str, str]:
        """The environment that points a worker at this topic and group (through ``url``)."""
        return {
            "FAULT_URL": url or self.url,
            "FAULT_TARGET": self.topic,
            "FAULT_GROUP": self.group,
            "FAULT_NAME": self.client_prefix,
        }

    def proxied_url(self, port: int) -> str:
        return f"mqtt://127.0.0.1:{port}"

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or 1883

    def close(self) -> None:
        """Disconnect (the sessions go with the test's own Mosquitto)."""
        self.publisher.disconnect()
        self.publisher.loop_stop()
