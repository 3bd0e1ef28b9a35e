"""RabbitMQAdapter's delayed retries: the ladder of delay queues, against the real broker.

Each test consumes its own queue (random suffix) and deletes it and its delay queues
afterwards. The levels are whole seconds, so these tests wait 1-2 s per retry.
"""

from __future__ import annotations

import decimal
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pika
import pika.exceptions
import pytest

import missive
from missive.adapters._rabbitmq_copies import copy_properties, copy_row, original_headers
from missive.adapters._rabbitmq_delays import MAX_LEVELS, delay_queue, level_for, levels_up_to
from missive.attempts import FIRST_ATTEMPT, HISTORY, RETRIES
from missive.dlq.sqlite import SQLiteDLQ
from missive.testing.conformance.support import running, wait_until
from tests.adapters.test_rabbitmq import RabbitMQHarness, rabbitmqctl
from tests.runtime.test_retry_later import Flaky, processor_for
from tests.services import require

Ctx = missive.HandlingContext[Any]
# Delays of at most 1 s: each retry waits in the 1 s delay queue.
ONE_SECOND = missive.Retry(delayed=2, initial_delay=1, max_delay=2)


class RetryHarness(RabbitMQHarness):
    """The RabbitMQ harness (which deletes the delay queues too), and a few looks."""

    def delay_queue_exists(self, seconds: int) -> bool:
        channel = self._connection.channel()
        try:
            channel.queue_declare(delay_queue(self.queue, seconds), passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return False
            raise
        channel.close()
        return True

    def waiting(self) -> int:
        """Messages ready in the work queue and in its delay queues."""
        return self.delayed() + self.ready()


def open_retry_harness(queue_type: str) -> Iterator[RetryHarness]:
    require("rabbitmq")
    h = RetryHarness(queue_type)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(params=["classic", "quorum"])
def harness(request: pytest.FixtureRequest) -> Iterator[RetryHarness]:
    yield from open_retry_harness(request.param)


@pytest.fixture
def classic() -> Iterator[RetryHarness]:
    yield from open_retry_harness("classic")


def publish_with_properties(harness: RetryHarness, body: bytes, **properties: Any) -> str:
    """Publish ``body`` through ``amq.direct`` with a routing key of its own; return it."""
    routing_key = f"{harness.queue}-key"
    harness.channel.queue_bind(harness.queue, "amq.direct", routing_key)
    harness.channel.basic_publish(
        "amq.direct", routing_key, body, pika.BasicProperties(**properties)
    )
    return routing_key


# -- the ladder, without a broker ----------------------------------------------------------


def test_levels_double_from_1_s_up_to_the_longest_delay_and_20_at_most() -> None:
    assert levels_up_to(0.02) == (1,)
    assert levels_up_to(2.0) == (1, 2)
    assert levels_up_to(300.0) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert len(levels_up_to(1e12)) == MAX_LEVELS


def test_a_delay_is_rounded_down_to_a_level_and_up_to_1_s() -> None:
    levels = (1, 2, 4, 8)
    assert [level_for(levels, d) for d in (0.0, 0.4, 1.0, 1.9, 2.0, 7.99, 8.0, 999.0)] == [
        1, 1, 1, 1, 2, 4, 8, 8,
    ]  # fmt: skip


def test_the_headers_lose_what_the_trips_through_the_delay_queues_added() -> None:
    theirs = {"queue": "elsewhere", "reason": "rejected", "count": 1}
    headers = {
        "tenant": "a",
        RETRIES: 1,
        "x-delivery-count": 2,
        "x-death": [{"queue": "q.missive-delay.2", "reason": "expired", "count": 1}, theirs],
        "x-first-death-queue": "q.missive-delay.2",
        "x-first-death-reason": "expired",
        "x-first-death-exchange": "",
    }
    assert original_headers(headers, "q") == {"tenant": "a", "x-death": [theirs]}


@pytest.mark.parametrize(
    ("redelivered", "delivery_count", "expected"),
    [(False, None, (3, True)), (True, None, (None, False)), (True, 1, (4, False))],
    ids=["fresh", "redelivered-classic", "redelivered-quorum"],
)
def test_a_copy_counts_its_retries_and_only_a_redelivered_copy_is_a_suspect(
    redelivered: bool, delivery_count: int | None, expected: tuple[int | None, bool]
) -> None:
    method = SimpleNamespace(redelivered=redelivered, exchange="", routing_key="q")
    headers: dict[str, Any] = {RETRIES: 2, HISTORY: "[]", "x-missive-routing-key": "rk"}
    if delivery_count is not None:
        headers["x-delivery-count"] = delivery_count
    properties = pika.BasicProperties(message_id="m1", headers=headers)

    attributes, count, retried = copy_row("q", method, properties, headers)  # type: ignore[arg-type]

    assert (count, retried) == expected
    assert attributes["delivery_count"] == count
    assert attributes["routing_key"] == "rk"
    assert attributes["headers"] == {}


def test_a_copy_has_the_state_in_headers_and_floats_as_text() -> None:
    # Given a delivery whose headers hold a float (another client's double, which
    # pika reads but cannot write), with no kept properties
    attributes = {
        "queue": "q",
        "exchange": "ex",
        "routing_key": "rk",
        "headers": {"rate": 0.5, "nested": {"list": [1.5]}},
        "publisher_id": True,
        "content_type": "text/plain",
    }
    message = missive.RawMessage(b"x", b"m-1", attributes)
    state = {RETRIES: 1, FIRST_ATTEMPT: 1700000000.25, HISTORY: [{"at": 1.0, "delay": 2.0}]}

    properties = copy_properties(None, message, state)

    assert properties.message_id == "m-1"
    assert properties.content_type == "text/plain"
    assert properties.headers == {
        "rate": "0.5",
        "nested": {"list": ["1.5"]},
        RETRIES: 1,
        FIRST_ATTEMPT: "1700000000.25",
        HISTORY: '[{"at":1.0,"delay":2.0}]',
        "x-missive-exchange": "ex",
        "x-missive-routing-key": "rk",
    }


# -- against the broker --------------------------------------------------------------------


def test_a_failing_message_is_handled_after_its_retries_with_its_id_properties_and_history(
    harness: RetryHarness,
) -> None:
    # Given a handler that fails twice per message, under two delayed retries
    handler = Flaky(failures=2)
    processor, dlq, events = processor_for(handler, ONE_SECOND)
    routing_key = publish_with_properties(
        harness,
        b"{}",
        message_id="order-1",
        content_type="application/json",
        correlation_id="c-1",
        reply_to="replies",
        headers={"tenant": "acme"},
    )
    # When it is consumed
    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: handler.acked, "the message handled after two retries")
    # Then each delivery had the same id, exchange, routing key, properties and headers
    first, second, third = handler.seen
    assert {m.message_id for m in handler.seen} == {b"order-1"}
    for message in handler.seen:
        attributes = message.attributes
        assert attributes["exchange"] == "amq.direct"
        assert attributes["routing_key"] == routing_key
        assert attributes["headers"] == {"tenant": "acme"}
        assert attributes["publisher_id"] is True
        assert attributes["content_type"] == "application/json"
        assert attributes["correlation_id"] == "c-1"
        assert attributes["reply_to"] == "replies"
    # And the retries carried their state in, the count going on
    assert RETRIES not in first.attributes
    assert [m.attributes[RETRIES] for m in (second, third)] == [1, 2]
    assert [len(m.attributes[HISTORY]) for m in (second, third)] == [1, 2]
    assert third.attributes[HISTORY][0]["reason"] == "handler 'Flaky' raised ConnectionError"
    assert third.attributes[FIRST_ATTEMPT] == pytest.approx(time.time(), abs=30)
    assert [m.attributes["delivery_count"] for m in handler.seen] == [1, 2, 3]
    assert events.counts == [1, 2, 3]
    assert len(events.retries) == 2
    assert dlq == {}
    assert harness.waiting() == 0


def test_a_copy_waits_in_its_delay_queue_with_the_original_properties_and_the_state(
    classic: RetryHarness,
) -> None:
    # Given a message with every property, whose handler asks for a retry in 5 s
    handler_calls: list[missive.Message] = []

    def handler(message: missive.Message, ctx: Ctx) -> None:
        handler_calls.append(message)
        ctx.retry(delay=5.0)

    processor, _, events = processor_for(handler, missive.Retry(delayed=1, max_delay=8))
    publish_with_properties(
        classic,
        b"kept",
        message_id="m-1",
        content_type="text/plain",
        content_encoding="utf-8",
        priority=3,
        correlation_id="c-1",
        reply_to="replies",
        timestamp=1_700_000_000,
        type="order",
        app_id="shop",
        expiration="60000",
        headers={"tenant": "acme", "rate": decimal.Decimal("0.5")},
    )
    # When it is consumed, then the worker stops
    with running(classic.adapter(missive.RawMessage, processor)):
        wait_until(lambda: events.retries, "the retry asked for")
    # Then its copy waits in the 4 s delay queue (5 s rounded down), persistent, with
    # the original's properties (not its TTL) and the attempt state in headers
    method, properties, body = classic.channel.basic_get(delay_queue(classic.queue, 4))
    assert method is not None, "no copy in the 4 s delay queue"
    classic.channel.basic_ack(method.delivery_tag)
    assert body == b"kept"
    expected = ("m-1", "text/plain", "utf-8", 3, "c-1", "replies", 1_700_000_000, "order", "shop")
    assert (
        properties.message_id,
        properties.content_type,
        properties.content_encoding,
        properties.priority,
        properties.correlation_id,
        properties.reply_to,
        properties.timestamp,
        properties.type,
        properties.app_id,
    ) == expected
    assert properties.delivery_mode == 2
    assert properties.expiration is None
    headers = properties.headers
    assert headers["tenant"] == "acme"
    assert headers["rate"] == decimal.Decimal("0.5")
    assert headers[RETRIES] == 1
    assert float(headers[FIRST_ATTEMPT]) == pytest.approx(time.time(), abs=30)
    [entry] = json.loads(headers[HISTORY])
    assert entry["delay"] == 5.0
    assert headers["x-missive-exchange"] == "amq.direct"
    assert len(handler_calls) == 1


def test_a_message_without_a_publisher_id_keeps_its_id_across_retries(
    classic: RetryHarness,
) -> None:
    # Given a message published without a message_id, failing once
    handler = Flaky(failures=1)
    processor, _, _ = processor_for(handler, ONE_SECOND)
    classic.channel.basic_publish("", classic.queue, b"anonymous")
    # When it is retried
    with running(classic.adapter(missive.RawMessage, processor)):
        wait_until(lambda: handler.acked, "the message handled after a retry")
    # Then the retry has the id Missive gave the first delivery, still not the publisher's
    first, again = handler.seen
    assert again.message_id == first.message_id
    assert again.attributes["publisher_id"] is False
    assert again.attributes["headers"] == {}


def test_exhausted_retries_dead_letter_the_message_with_its_history(
    harness: RetryHarness,
) -> None:
    # Given a handler that always fails, under two delayed retries
    handler = Flaky(failures=100)
    processor, dlq, events = processor_for(handler, ONE_SECOND)
    harness.publish([b"doomed"])
    # When it is consumed until the policy gives up
    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: dlq, "the message dead-lettered")
        wait_until(lambda: harness.remaining() == 0, "the message acked")
    # Then it was handled three times, and dead-lettered with the three attempts
    message, reason = next(iter(dlq.values()))
    assert len(handler.seen) == 3
    assert message.message_id == f"{harness.queue}-1".encode()
    assert message.attributes[RETRIES] == 2
    assert [entry["delay"] is None for entry in message.attributes[HISTORY]] == [
        False,
        False,
        True,
    ]
    assert "attempts (3):" in reason
    assert len(events.retries) == 2
    assert harness.waiting() == 0


def test_the_delay_queues_are_declared_only_for_a_policy_with_delayed_retries(
    classic: RetryHarness,
) -> None:
    # Given a processor without delayed retries
    processor, _, _ = processor_for(Flaky(failures=0), missive.Retry(immediate=2))
    # When an adapter runs, then no delay queue is declared
    with running(classic.adapter(missive.RawMessage, processor)):
        pass
    assert not classic.delay_queue_exists(1)
    # Given a handler of its own with delayed retries up to 5 s
    processor.handle_for(lambda m: False, retry=missive.Retry(delayed=1, max_delay=5))(print)
    # When an adapter runs, then 1, 2 and 4 s delay queues are declared, durable, with
    # their TTL, dead-lettering back to the work queue
    with running(classic.adapter(missive.RawMessage, processor)):
        pass
    assert [classic.delay_queue_exists(s) for s in (1, 2, 4, 8)] == [True, True, True, False]
    rows = rabbitmqctl("list_queues", "name", "durable", "arguments")
    [(durable, arguments)] = [row[1:] for row in rows if row[0] == delay_queue(classic.queue, 4)]
    assert durable == "true"
    assert '{"x-message-ttl",4000}' in arguments
    assert '{"x-dead-letter-exchange",[]}' in arguments  # "" as rabbitmqctl prints it
    assert f'{{"x-dead-letter-routing-key","{classic.queue}"}}' in arguments


def test_messages_waiting_in_the_delay_queues_are_handled_by_a_new_worker(
    harness: RetryHarness,
) -> None:
    # Given messages whose first delivery fails, retried after 1 s
    handler = Flaky(failures=1)
    processor, dlq, events = processor_for(handler, missive.Retry(delayed=1, max_delay=1))
    harness.publish(b"%d" % i for i in range(20))
    # When the worker stops once each has failed once
    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: len(events.retries) == 20, "every message due a retry")
    # Then every copy is kept by the broker, none held by a consumer
    wait_until(lambda: harness.waiting() == 20, "20 messages waiting in the broker")
    # And a new worker handles each of them
    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: len(handler.acked) == 20, "every message handled by a new worker")
    assert sorted(m.attributes[RETRIES] for m in handler.acked) == [1] * 20
    assert dlq == {}
    wait_until(lambda: harness.waiting() == 0, "nothing left in the broker")


def test_retries_at_concurrency_4_are_handled(harness: RetryHarness) -> None:
    # Given 12 messages that fail twice each, at concurrency 4
    handler = Flaky(failures=2)
    processor, dlq, events = processor_for(handler, ONE_SECOND)
    harness.publish(b"%d" % i for i in range(12))
    # When they are consumed
    with running(harness.adapter(missive.RawMessage, processor, concurrency=4)):
        wait_until(lambda: len(handler.acked) == 12, "every message handled after 2 retries")
    # Then each was retried twice, and none was dead-lettered
    assert len(events.retries) == 24
    assert sorted(m.attributes[RETRIES] for m in handler.acked) == [2] * 12
    assert dlq == {}
    wait_until(lambda: harness.waiting() == 0, "nothing left in the broker")


def test_retried_copies_count_on_and_run_side_by_side_not_alone(classic: RetryHarness) -> None:
    # Given four messages that fail once, then wait for each other on their retry
    together = threading.Barrier(4, timeout=15)
    acked: list[missive.Message] = []

    def handler(message: missive.Message, ctx: Ctx) -> None:
        if RETRIES not in message.attributes:
            raise ConnectionError("database down")
        together.wait()  # a copy run alone would wait here until it breaks
        acked.append(message)
        ctx.ack()

    processor, dlq, events = processor_for(handler, missive.Retry(delayed=1, max_delay=1))
    classic.publish(b"%d" % i for i in range(4))
    # When they are consumed at concurrency 4
    with running(classic.adapter(missive.RawMessage, processor, concurrency=4)):
        wait_until(lambda: len(acked) == 4, "the four copies handled together")
    # Then the copies were counted as second deliveries, and all four ran at once
    assert sorted(events.counts, key=lambda c: c or 0) == [1, 1, 1, 1, 2, 2, 2, 2]
    assert not together.broken
    assert dlq == {}


class CountingDLQ(SQLiteDLQ):
    """A SQLite DLQ that records the delivery counts written to it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[tuple[str, bytes]] = []

    def record_attempt(self, message_id: bytes) -> int:
        self.writes.append(("record", message_id))
        return super().record_attempt(message_id)

    def forget_attempts(self, message_id: bytes) -> None:
        self.writes.append(("forget", message_id))
        super().forget_attempts(message_id)


def test_a_retried_copy_is_not_counted_in_the_dlq(harness: RetryHarness, tmp_path: Path) -> None:
    # Given a DLQ that counts redeliveries, and a handler failing twice
    handler = Flaky(failures=2)
    processor, _, events = processor_for(handler, ONE_SECOND)
    dlq = CountingDLQ(tmp_path / "dlq.db")
    processor.set_dlq(dlq)
    harness.publish([b"counted"])
    # When the message is retried twice, then handled
    try:
        with running(harness.adapter(missive.RawMessage, processor, max_deliveries=3)):
            wait_until(lambda: handler.acked, "the message handled after two retries")
    finally:
        dlq.close()
    # Then its copies' counts went on without a write to the DLQ (they are exact)
    assert events.counts == [1, 2, 3]
    assert dlq.writes == []


def test_a_policy_set_once_the_worker_runs_declares_the_ladder_at_its_first_retry(
    classic: RetryHarness,
) -> None:
    # Given a worker started without delayed retries
    handler = Flaky(failures=1)
    processor, _, events = processor_for(handler, missive.NO_RETRY)
    with running(classic.adapter(missive.RawMessage, processor)):
        assert not classic.delay_queue_exists(1)
        # When the policy gains delayed retries and a message fails
        processor.retry = missive.Retry(delayed=1, max_delay=1)
        classic.publish([b"late"])
        wait_until(lambda: handler.acked, "the message handled after a retry")
    # Then the ladder was declared then, and the message retried through it
    assert classic.delay_queue_exists(1)
    assert len(events.retries) == 1
    assert handler.acked[0].attributes[RETRIES] == 1


def test_a_delay_queue_declared_otherwise_stops_the_adapter_saying_what_it_needs(
    classic: RetryHarness,
) -> None:
    # Given a delay queue declared by hand with another TTL
    classic.channel.queue_declare(
        delay_queue(classic.queue, 1), durable=True, arguments={"x-message-ttl": 5}
    )
    processor, _, _ = processor_for(Flaky(failures=0), ONE_SECOND)
    adapter = classic.adapter(missive.RawMessage, processor)
    # When the adapter runs, then it stops at once with the broker's refusal, explained
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        adapter.run()
    assert caught.value.reply_code == 406
    [note] = caught.value.__notes__
    assert f"'{classic.queue}.missive-delay.1'" in note
    assert "x-message-ttl=1000" in note
