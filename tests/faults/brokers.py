"""The two brokers under test, each bound to one scenario's own queue or stream.

Each publishes in batches (RabbitMQ: persistent messages in AMQP transactions of
:data:`BATCH`; Redis: pipelines), says how many messages it still holds, kills its
workers' connections server-side, and gives the environment that points a worker
from ``apps.py`` at it. ``close`` deletes what it created.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Sequence

import pika
import pika.exceptions
import redis

from tests.adapters.test_rabbitmq import URL as AMQP_URL
from tests.adapters.test_rabbitmq import rabbitmqctl
from tests.conformance.redis_harness import URL as REDIS_URL
from tests.conformance.redis_harness import RedisStreamsHarness

#: How many messages one publishing round trip carries.
BATCH = 1000


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
        """Messages ready in the queue (unacked ones in a worker's hands not counted)."""
        try:
            frame = self._channel().queue_declare(self.queue, passive=True)
        except pika.exceptions.AMQPError:  # a connection from before a broker restart
            self._connection = None
            frame = self._channel().queue_declare(self.queue, passive=True)
        return int(frame.method.message_count)

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
