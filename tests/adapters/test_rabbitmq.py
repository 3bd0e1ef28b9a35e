"""RabbitMQAdapter against the real broker on 127.0.0.1:5672 (guest/guest).

Each test declares its own queue (random suffix) and deletes it afterwards. Adapters
run in a thread: ``run()`` in the thread, ``stop()``, then a bounded join.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pytest

import missive
from missive.adapters.rabbitmq import RabbitMQAdapter
from tests.conformance.harness import (
    CONSUMER_GROUPS,
    EXTERNAL_PUBLISHER,
    KILL_CONNECTION,
    PERSISTENCE,
    REDELIVERY,
)
from tests.services import require

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
TIMEOUT = 30.0


def require_amqp_tools() -> None:
    """Skip (locally) or fail (CI=true) unless ``amqp-publish`` is installed."""
    if shutil.which("amqp-publish"):
        return
    problem = "amqp-publish is not installed: apt-get install amqp-tools"
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl``; the tests that kill connections or count messages need it."""
    result = subprocess.run(
        ["rabbitmqctl", *args, "--formatter", "json", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


class RabbitMQHarness:
    """The conformance ``Harness`` for RabbitMQ, bound to one fresh queue.

    Published messages carry a unique AMQP ``message_id`` so that redeliveries keep
    their id. ``queue_type`` is ``"classic"`` or ``"quorum"`` (which counts deliveries).
    """

    name = "rabbitmq"
    capabilities = frozenset(
        {REDELIVERY, PERSISTENCE, CONSUMER_GROUPS, KILL_CONNECTION, EXTERNAL_PUBLISHER}
    )

    def __init__(self, queue_type: str = "classic") -> None:
        suffix = uuid.uuid4().hex[:12]
        self.queue = f"missive-test-{suffix}"
        self.connection_name = f"missive-test {suffix}"
        self._connection = pika.BlockingConnection(pika.URLParameters(URL))
        self._channel = self._connection.channel()
        self._channel.queue_declare(
            self.queue, durable=True, arguments={"x-queue-type": queue_type}
        )
        self._channel.confirm_delivery()
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
            self._channel.basic_publish(
                "",
                self.queue,
                body,
                pika.BasicProperties(message_id=f"{self.queue}-{self._published}"),
            )

    def publish_external(self, body: bytes) -> None:
        require_amqp_tools()
        subprocess.run(
            ["amqp-publish", "--url", URL.rsplit("/", 1)[0], "-r", self.queue],
            input=body,
            check=True,
            timeout=TIMEOUT,
        )

    def remaining(self) -> int:
        for queue in json.loads(rabbitmqctl("list_queues", "name", "messages")):
            if queue["name"] == self.queue:
                return int(queue["messages"])
        raise AssertionError(f"queue {self.queue} does not exist")

    def ready(self) -> int:
        """Messages ready for delivery (not counting unacked ones): fast, over AMQP."""
        frame = self._channel.queue_declare(self.queue, passive=True)
        return int(frame.method.message_count)

    def kill_connections(self) -> None:
        # The JSON formatter prints pids that close_connection does not accept: use the
        # table, one connection a line, "<pid>\t<client properties>".
        table = subprocess.run(
            ["rabbitmqctl", "list_connections", "pid", "client_properties", "-s"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        pids = [
            line.split("\t", 1)[0]
            for line in table.splitlines()
            if f'{{"connection_name","{self.connection_name}"}}' in line
        ]
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
            self._channel.queue_delete(self.queue)
        finally:
            self._connection.close()


@pytest.fixture
def harness() -> Iterator[RabbitMQHarness]:
    require("rabbitmq")
    h = RabbitMQHarness()
    yield h
    h.close()


@pytest.fixture
def quorum_harness() -> Iterator[RabbitMQHarness]:
    require("rabbitmq")
    h = RabbitMQHarness("quorum")
    yield h
    h.close()


@contextmanager
def running(adapter: missive.Adapter[Any]) -> Iterator[None]:
    """Run ``adapter`` in a thread while in the block; stop it and join on the way out."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            adapter.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        assert adapter.wait_ready(TIMEOUT), "the adapter did not start consuming"
        yield
    finally:
        adapter.stop()
        thread.join(TIMEOUT)
    assert not thread.is_alive(), "run() did not return after stop()"
    if errors:
        raise errors[0]


def wait_until(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.02)


class Recorder:
    """A processor whose one handler records each message and acks it."""

    def __init__(self, on_message: Callable[[missive.Message], None] | None = None) -> None:
        self.processor: missive.Processor[Any] = missive.Processor()
        self.messages: list[missive.Message] = []
        self._lock = threading.Lock()
        self._on_message = on_message

        @self.processor.handle_for(lambda m: True)
        def record(message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
            if self._on_message is not None:
                self._on_message(message)
            with self._lock:
                self.messages.append(message)
            ctx.ack()

    @property
    def bodies(self) -> list[bytes]:
        with self._lock:
            return [m.raw_data for m in self.messages]


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
    }


def test_every_byte_value_and_a_1_mib_body_round_trip_unchanged(
    harness: RabbitMQHarness,
) -> None:
    # Given a body with every byte value and a body of 1 MiB of random bytes
    every_byte = bytes(range(256)) * 2
    big = os.urandom(1024 * 1024)
    recorder = Recorder()
    harness.publish([every_byte, big])
    # When they are consumed
    with running(harness.adapter(missive.RawMessage, recorder.processor)):
        wait_until(lambda: len(recorder.messages) == 2, "both messages are handled")
    # Then the handler saw exactly the bytes that were published
    assert recorder.bodies == [every_byte, big]


def test_an_acked_message_is_removed_from_the_broker(harness: RabbitMQHarness) -> None:
    # Given three messages on the queue
    recorder = Recorder()
    harness.publish([b"1", b"2", b"3"])
    assert harness.remaining() == 3
    # When a handler acks each of them
    with running(harness.adapter(missive.RawMessage, recorder.processor)):
        wait_until(lambda: len(recorder.messages) == 3, "the messages are handled")
    # Then the broker holds none of them any more, ready or unacked
    assert harness.remaining() == 0


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


def invalid_json_processor() -> missive.Processor[missive.JSONMessage]:
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()

    @processor.handle_for(lambda m: m.get_json()["kind"] == "x")
    def never(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        ctx.ack()

    return processor


def no_match_processor() -> missive.Processor[missive.JSONMessage]:
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()

    @processor.handle_for(lambda m: False)
    def never(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        ctx.ack()

    return processor


def raising_processor() -> missive.Processor[missive.JSONMessage]:
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def broken(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        raise KeyError("boom")

    return processor


@pytest.mark.parametrize(
    ("make_processor", "body", "reason"),
    [
        (raising_processor, b'{"kind": "x"}', "raised KeyError"),
        (no_match_processor, b'{"kind": "x"}', "no handler matched"),
        (invalid_json_processor, b"{not json", "invalid JSON"),
    ],
    ids=["handler-error", "no-match", "invalid-json"],
)
def test_a_message_that_cannot_be_handled_is_dead_lettered_and_acked(
    harness: RabbitMQHarness,
    make_processor: Callable[[], missive.Processor[missive.JSONMessage]],
    body: bytes,
    reason: str,
) -> None:
    # Given a processor with a DLQ that cannot handle the message
    processor = make_processor()
    dlq: dict[bytes, tuple[missive.Message, str]] = {}
    processor.set_dlq(dlq)
    harness.publish([body])
    # When it is consumed
    with running(harness.adapter(missive.JSONMessage, processor)):
        wait_until(lambda: dlq, "the message is dead-lettered")
        # Then it is in the DLQ under its id, with the reason, and acked on the broker
        wait_until(lambda: harness.remaining() == 0, "the message is acked")
    [(message_id, (message, stored_reason))] = dlq.items()
    assert message_id == f"{harness.queue}-1".encode()
    assert message.raw_data == body
    assert reason in stored_reason


def test_5000_messages_are_each_handled_once(harness: RabbitMQHarness) -> None:
    # Given 5,000 messages on the queue
    bodies = [b"%d" % i for i in range(5000)]
    harness.publish(bodies)
    recorder = Recorder()
    # When they are consumed
    with running(harness.adapter(missive.RawMessage, recorder.processor)):
        wait_until(lambda: len(recorder.messages) >= 5000, "5,000 messages are handled")
        wait_until(lambda: harness.ready() == 0, "the queue is empty")
    # Then each was handled exactly once and none is left
    assert sorted(recorder.bodies, key=int) == bodies
    assert harness.remaining() == 0


def test_a_message_from_a_non_python_publisher_is_delivered(harness: RabbitMQHarness) -> None:
    # Given a message published with amqp-publish (C, librabbitmq), without a message id
    require_amqp_tools()
    body = b'{"from": "amqp-publish", "bytes": "\xc3\xa9"}'
    harness.publish_external(body)
    recorder = Recorder()
    # When it is consumed
    with running(harness.adapter(missive.JSONMessage, recorder.processor)):
        wait_until(lambda: recorder.messages, "the message is handled")
    # Then its bytes are intact and it got a generated id
    [message] = recorder.messages
    assert message.raw_data == body
    assert message.attributes["publisher_id"] is False
    assert message.message_id
    assert harness.remaining() == 0


def test_deliveries_without_a_publisher_id_get_distinct_ids(harness: RabbitMQHarness) -> None:
    # Given two identical messages published without a message id
    channel = harness._channel
    for _ in range(2):
        channel.basic_publish("", harness.queue, b"same")
    recorder = Recorder()
    # When they are consumed
    with running(harness.adapter(missive.RawMessage, recorder.processor)):
        wait_until(lambda: len(recorder.messages) == 2, "both are handled")
    # Then each has its own id (a DLQ keyed by id keeps both)
    first, second = recorder.messages
    assert first.message_id != second.message_id
