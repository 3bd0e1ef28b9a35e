"""RabbitMQAdapter against the real broker on 127.0.0.1:5672 (guest/guest).

The RabbitMQ conformance harness, the adapter conformance suite run on a classic and
on a quorum queue, and what is specific to AMQP deliveries. Each test declares its
own queue (random suffix) and deletes it afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

import missive
from missive.adapters._rabbitmq_delays import MAX_LEVELS, delay_queue, levels_up_to
from missive.adapters.rabbitmq import RabbitMQAdapter
from missive.testing.conformance.adapter_suite import AdapterSuite
from missive.testing.conformance.events_suite import EventsSuite
from missive.testing.conformance.harness import (
    CONSUMER_GROUPS,
    DELAYED_RETRY,
    EXTERNAL_PUBLISHER,
    KILL_CONNECTION,
    PERSISTENCE,
    REDELIVERY,
    WithOptions,
)
from missive.testing.conformance.support import TIMEOUT, Recorder, running, wait_until
from tests.services import require

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
#: Every delay level a work queue's ladder may have, in seconds.
ALL_LEVELS = levels_up_to(2.0**MAX_LEVELS)


def require_tool(command: str, package: str) -> None:
    """Skip (locally) or fail (CI=true) unless ``command`` is installed."""
    if shutil.which(command):
        return
    problem = f"{command} is not installed: apt-get install {package}"
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


def require_amqp_tools() -> None:
    """``amqp-publish``, the non-Python publisher (C, librabbitmq)."""
    require_tool("amqp-publish", "amqp-tools")


def rabbitmqctl(*args: str) -> list[list[str]]:
    """Run ``rabbitmqctl ARGS -s``: its table's rows, split on tabs, without the header.

    The table, not ``--formatter json``: JSON prints pids that ``close_connection``
    does not accept.
    """
    require_tool("rabbitmqctl", "rabbitmq-server (the tests count and kill connections with it)")
    result = subprocess.run(
        ["rabbitmqctl", *args, "-s"], capture_output=True, text=True, timeout=60, check=True
    )
    return [line.split("\t") for line in result.stdout.splitlines() if line]


class RabbitMQHarness:
    """The conformance ``Harness`` for RabbitMQ, bound to one fresh queue.

    Published messages carry a unique AMQP ``message_id`` so that redeliveries keep
    their id. ``queue_type`` is ``"classic"`` or ``"quorum"`` (which counts deliveries).
    The queue's delay queues (delayed retries) count in :meth:`remaining` and are
    deleted with it.
    """

    name = "rabbitmq"
    capabilities = frozenset(
        {
            REDELIVERY,
            PERSISTENCE,
            CONSUMER_GROUPS,
            DELAYED_RETRY,
            KILL_CONNECTION,
            EXTERNAL_PUBLISHER,
        }
    )

    def __init__(self, queue_type: str = "classic") -> None:
        suffix = uuid.uuid4().hex[:12]
        self.queue = f"missive-test-{suffix}"
        self.connection_name = f"missive-test {suffix}"
        self._connection = pika.BlockingConnection(pika.URLParameters(URL))
        self.channel = self._connection.channel()
        self.channel.queue_declare(self.queue, durable=True, arguments={"x-queue-type": queue_type})
        self.channel.confirm_delivery()
        self._published = 0

    def adapter(
        self, message_cls: type[missive.Message], processor: missive.Processor[Any], **options: Any
    ) -> RabbitMQAdapter[Any]:
        options.setdefault("url", URL)
        options.setdefault("connection_name", self.connection_name)
        options.setdefault("retry_delay", 0.05)
        options.setdefault("max_reconnect_delay", 1.0)
        return RabbitMQAdapter(message_cls, processor, self.queue, **options)

    def publish(self, bodies: Iterable[bytes]) -> None:
        for body in bodies:
            self._published += 1
            self.channel.basic_publish(
                "",
                self.queue,
                body,
                pika.BasicProperties(message_id=f"{self.queue}-{self._published}"),
            )

    def publish_external(self, body: bytes) -> None:
        require_amqp_tools()
        subprocess.run(
            ["amqp-publish", "--url", URL, "-r", self.queue],
            input=body,
            check=True,
            timeout=TIMEOUT,
        )

    def remaining(self) -> int:
        """Messages held by the broker: ready, or unacked by this test's adapters."""
        # Ready messages over AMQP, plus those our adapters' channels hold unacked. Not
        # `list_queues messages`: for quorum queues it lags by up to 5 s. Read in this
        # order, a message delivered in between counts twice, never zero times. The
        # delay queues first (a copy leaves them for the queue), and again last: a
        # copy published after the first look, its original acked before the unacked
        # are read, is in the second.
        delayed = self.delayed()
        ready = self.ready()
        connections = set(self._connection_pids())
        unacked = 0
        if connections:
            rows = rabbitmqctl("list_channels", "connection", "messages_unacknowledged")
            unacked = sum(int(count) for pid, count in rows if pid in connections)
        return max(delayed, self.delayed()) + ready + unacked

    def delayed(self) -> int:
        """Messages waiting in the queue's delay queues for a delayed retry."""
        waiting = 0
        for seconds in ALL_LEVELS:  # a ladder starts at 1 s and has no gaps
            channel = self._connection.channel()
            try:
                frame = channel.queue_declare(delay_queue(self.queue, seconds), passive=True)
            except pika.exceptions.ChannelClosedByBroker:  # 404: no such level
                return waiting
            channel.close()
            waiting += int(frame.method.message_count)
        return waiting

    def ready(self) -> int:
        """Messages ready for delivery (not counting unacked ones), over AMQP."""
        frame = self.channel.queue_declare(self.queue, passive=True)
        return int(frame.method.message_count)

    def _connection_pids(self) -> list[str]:
        """The broker's pids of this test's adapters' connections."""
        marker = f'{{"connection_name","{self.connection_name}"}}'
        rows = rabbitmqctl("list_connections", "pid", "client_properties")
        return [pid for pid, properties in rows if marker in properties]

    def kill_connections(self) -> None:
        pids = self._connection_pids()
        assert pids, f"no connection named {self.connection_name!r} to kill"
        for pid in pids:
            subprocess.run(
                ["rabbitmqctl", "close_connection", pid, "killed by a test"],
                capture_output=True,
                timeout=60,
                check=True,
            )

    def close(self) -> None:
        try:
            self.channel.queue_delete(self.queue)
            for seconds in ALL_LEVELS:  # deleting a queue that does not exist is no error
                self.channel.queue_delete(delay_queue(self.queue, seconds))
        finally:
            self._connection.close()


def open_harness(queue_type: str) -> Iterator[RabbitMQHarness]:
    """A harness on a fresh queue of ``queue_type``, closed (queue deleted) afterwards."""
    require("rabbitmq")
    h = RabbitMQHarness(queue_type)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def harness() -> Iterator[RabbitMQHarness]:
    yield from open_harness("classic")


@pytest.fixture
def quorum_harness() -> Iterator[RabbitMQHarness]:
    yield from open_harness("quorum")


class TestRabbitMQConformance(AdapterSuite, EventsSuite):
    """Every test of the suite, on a classic queue and on a quorum queue."""

    @pytest.fixture(params=["classic", "quorum"])
    def harness(self, request: pytest.FixtureRequest) -> Iterator[RabbitMQHarness]:
        yield from open_harness(request.param)



class TestRabbitMQConcurrentConformance(AdapterSuite, EventsSuite):
    """The same suites with eight messages in flight, on both kinds of queue."""

    @pytest.fixture(params=["classic", "quorum"])
    def harness(self, request: pytest.FixtureRequest) -> Iterator[WithOptions]:
        for harness in open_harness(request.param):
            yield WithOptions(harness, concurrency=8)


def test_a_published_message_is_delivered_with_its_id_and_attributes(
    harness: RabbitMQHarness,
) -> None:
    # Given a message published to the test's queue
    recorder = Recorder()
    harness.publish([b"hello"])
    # When an adapter consumes the queue
    with running(harness.adapter(missive.RawMessage, recorder.processor)):
        wait_until(lambda: recorder.messages, "the message is handled")
    # Then the handler got it, with the publisher's id and the delivery's attributes
    [message] = recorder.messages
    assert message.raw_data == b"hello"
    assert message.message_id == f"{harness.queue}-1".encode()
    attributes = dict(message.attributes)
    assert attributes == {
        "queue": harness.queue,
        "exchange": "",
        "routing_key": harness.queue,
        "redelivered": False,
        "delivery_count": 1,
        "headers": {},
        "publisher_id": True,
        "content_type": None,
        "correlation_id": None,
        "reply_to": None,
        "content_encoding": None,
        "priority": None,
        "timestamp": None,
        "type": None,
        "app_id": None,
    }


def test_a_nacked_message_is_redelivered_with_the_same_id_and_the_redelivered_flag(
    harness: RabbitMQHarness,
) -> None:
    # Given a handler that nacks the first delivery of a message and acks the next
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    seen: list[missive.RawMessage] = []

    @processor.handle_for(lambda m: True)
    def flaky(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        seen.append(message)
        if len(seen) == 1:
            ctx.nack()
        else:
            ctx.ack()

    harness.publish([b"again"])
    # When it is consumed
    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: len(seen) == 2, "the message is delivered twice")
    # Then it came back with the same id, flagged as redelivered, and is now gone
    first, second = seen
    assert second.message_id == first.message_id
    assert (first.attributes["redelivered"], second.attributes["redelivered"]) == (False, True)
    assert second.attributes["delivery_count"] is None  # a classic queue does not count
    assert harness.remaining() == 0


def test_deliveries_without_a_publisher_id_get_distinct_ids(harness: RabbitMQHarness) -> None:
    # Given two identical messages published without a message id
    channel = harness.channel
    for _ in range(2):
        channel.basic_publish("", harness.queue, b"same")
    recorder = Recorder()
    # When they are consumed
    with running(harness.adapter(missive.RawMessage, recorder.processor)):
        wait_until(lambda: len(recorder.messages) == 2, "both are handled")
    # Then each has its own id (a DLQ keyed by id keeps both)
    first, second = recorder.messages
    assert first.message_id != second.message_id
