"""Delayed retries on Redis Streams, against the real Redis on 127.0.0.1:6379: the sorted
set of due copies, its two scripts, and what a copy carries back.

Each test uses its own stream and group (random suffix); the harness deletes both the
stream and the group's sorted set afterwards.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import missive
from missive.adapters._redis_delays import DelayedSet
from missive.adapters._redis_streams_transport import StreamsTransport
from missive.attempts import FIRST_ATTEMPT, HISTORY, RETRIES
from missive.events import Observer
from missive.testing.conformance.support import running, wait_until
from tests.conformance.redis_harness import RedisPubSubHarness, RedisStreamsHarness
from tests.services import require

Ctx = missive.HandlingContext[Any]
DLQ = dict[bytes, tuple[missive.Message, str]]
QUICK = missive.Retry(delayed=1, initial_delay=0.05, max_delay=0.1)


@pytest.fixture
def harness() -> Iterator[RedisStreamsHarness]:
    require("redis")
    h = RedisStreamsHarness()
    yield h
    h.close()


class Counts(Observer):
    """Records the delivery count of each message received."""

    def __init__(self) -> None:
        self.counts: list[int | None] = []

    def message_received(self, message: missive.Message, delivery_count: int | None) -> None:
        self.counts.append(delivery_count)


class FailsFirstDelivery:
    """Raises on a message's first delivery (no attempt state yet), acks its retries;
    records every message it sees. Thread-safe."""

    def __init__(self, pause: float = 0.0) -> None:
        self.__qualname__ = "FailsFirstDelivery"
        self.pause = pause
        self.lock = threading.Lock()
        self.failed: list[missive.Message] = []
        self.acked: list[missive.Message] = []
        self.running = self.most = 0

    def __call__(self, message: missive.Message, ctx: Ctx) -> None:
        if RETRIES not in message.attributes:
            with self.lock:
                self.failed.append(message)
            raise ConnectionError("the database is down")
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.pause)
        with self.lock:
            self.running -= 1
            self.acked.append(message)
        ctx.ack()


def processor_for(handler: Any, retry: missive.Retry = QUICK) -> tuple[Any, DLQ, Counts]:
    processor: missive.Processor[missive.RawMessage] = missive.Processor(retry=retry)
    processor.handle_for(lambda m: True)(handler)
    dlq: DLQ = {}
    processor.set_dlq(dlq)
    counts = Counts()
    processor.add_observer(counts)
    return processor, dlq, counts


def test_a_retried_entry_comes_back_as_the_same_message_with_its_fields_and_history(
    harness: RedisStreamsHarness,
) -> None:
    # Given an entry with one more field than the message's, and a handler failing once
    entry_id = harness.client.xadd(harness.stream, {"data": b"body", "source": b"billing"})
    handler = FailsFirstDelivery()
    processor, dlq, counts = processor_for(handler)
    # When it is consumed
    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: handler.acked, "the entry is handled on its retry")
        wait_until(lambda: harness.remaining() == 0, "the stream and the set hold nothing")
    # Then the retry is the same message (id, bytes, fields), its count going on
    [first], [again] = handler.failed, handler.acked
    assert again.message_id == first.message_id == entry_id
    assert again.raw_data == b"body"
    assert again.attributes["fields"] == {"source": b"billing"}
    assert again.attributes["delivery_count"] == 2
    assert counts.counts == [1, 2]
    # with the attempt state in its attributes, as on every transport
    assert again.attributes[RETRIES] == 1
    assert again.attributes[FIRST_ATTEMPT] == pytest.approx(time.time(), abs=30)
    [entry] = again.attributes[HISTORY]
    assert entry["reason"] == "handler 'FailsFirstDelivery' raised ConnectionError"
    assert 0 <= entry["delay"] <= 0.1
    assert dlq == {}


def test_exhausted_retries_are_dead_lettered_with_the_history_under_the_first_id(
    harness: RedisStreamsHarness,
) -> None:
    # Given a handler that always fails, three delayed retries, and max_deliveries=3
    seen: list[missive.Message] = []

    def always_fails(message: missive.Message, ctx: Ctx) -> None:
        seen.append(message)
        raise ConnectionError("the database is down")

    retry = missive.Retry(delayed=3, initial_delay=0.05, max_delay=0.1)
    processor, dlq, counts = processor_for(always_fails, retry)
    [entry_id] = [harness.client.xadd(harness.stream, {"data": b"doomed"})]
    # When it is consumed
    with running(harness.adapter(missive.RawMessage, processor, max_deliveries=3)):
        wait_until(lambda: dlq, "the message is dead-lettered")
        wait_until(lambda: harness.remaining() == 0, "the stream and the set hold nothing")
    # Then the counts went on across the copies, so max_deliveries ended the retries
    assert counts.counts == [1, 2, 3]
    assert {m.message_id for m in seen} == {entry_id}
    [(message_id, (message, reason))] = dlq.items()
    assert message_id == entry_id
    assert "not retried later: delivered 3 times, max_deliveries=3" in reason
    assert message.attributes[RETRIES] == 2
    assert [e["delay"] is None for e in message.attributes[HISTORY]] == [False, False, True]
    assert "attempts (3):" in reason


def test_two_workers_moving_at_once_neither_lose_nor_double_a_retry(
    harness: RedisStreamsHarness,
) -> None:
    # Given two workers of the group, each failing the first delivery of 500 messages
    one, two = FailsFirstDelivery(), FailsFirstDelivery()
    retry = missive.Retry(delayed=1, initial_delay=0.3, max_delay=0.3)
    processor_one, dlq_one, _ = processor_for(one, retry)
    processor_two, dlq_two, _ = processor_for(two, retry)
    with (
        running(harness.adapter(missive.RawMessage, processor_one)),
        running(harness.adapter(missive.RawMessage, processor_two)),
    ):
        # When the retries of all of them come due while both workers move copies
        harness.publish(b"%d" % i for i in range(500))
        wait_until(lambda: len(one.acked) + len(two.acked) >= 500, "every retry is handled")
        wait_until(lambda: harness.remaining() == 0, "the stream and the set hold nothing")
        time.sleep(0.5)  # room for a doubled copy
    # Then each message failed once and was handled once on its retry
    failed = [m.message_id for m in one.failed + two.failed]
    acked = [m.message_id for m in one.acked + two.acked]
    assert len(failed) == len(set(failed)) == 500
    assert sorted(acked) == sorted(failed)
    assert one.acked
    assert two.acked
    assert dlq_one == dlq_two == {}


def test_the_move_script_run_by_four_clients_at_once_adds_each_copy_once(
    harness: RedisStreamsHarness,
) -> None:
    # Given 1,000 copies in the delayed set, all due
    delayed = DelayedSet(harness.stream, harness.group, b"data")
    members = {
        json.dumps({"token": f"t{i}", "fields": ["data", str(i), "x-missive-id", f"{i}-0"]}): 0
        for i in range(1000)
    }
    harness.client.zadd(harness.delayed, members)
    # When four threads run the mover over and over at the same time (on the client's
    # pool: four connections)
    delayed.bind(harness.client)
    moved: list[int] = []

    def mover() -> None:
        left: float | None = 0.0
        while left is not None:
            count, left = delayed.move()
            moved.append(count)

    threads = [threading.Thread(target=mover) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Then every copy is in the stream exactly once, and the set is empty
    entries = harness.client.xrange(harness.stream)
    assert sorted(int(fields[b"data"]) for _, fields in entries) == list(range(1000))
    assert sum(moved) == 1000
    assert max(moved) <= 100
    assert harness.client.zcard(harness.delayed) == 0


def test_retries_waiting_when_a_worker_stops_are_handled_by_the_next_one(
    harness: RedisStreamsHarness,
) -> None:
    # Given a worker that asks for a retry in 4 s of each of 1,000 messages
    first: list[missive.Message] = []

    def later(message: missive.Message, ctx: Ctx) -> None:
        first.append(message)
        ctx.retry(delay=4.0)

    processor, _, _ = processor_for(later, missive.Retry(delayed=1, max_delay=10))
    harness.publish(b"%d" % i for i in range(1000))
    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: len(first) == 1000, "every message is handled once")
    # When it has stopped: every retry waits in Redis, none in the stopped worker
    assert harness.client.zcard(harness.delayed) == 1000
    assert harness.remaining() == 1000  # the set's members; nothing pending
    assert harness.pending() == []
    # and a new worker starts
    handler = FailsFirstDelivery()
    processor, dlq, _ = processor_for(handler)
    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: len(handler.acked) == 1000, "every retry is handled")
        wait_until(lambda: harness.remaining() == 0, "the stream and the set hold nothing")
    # Then it handled each retry once, the same messages
    assert handler.failed == []
    assert sorted(m.message_id for m in handler.acked) == sorted(m.message_id for m in first)
    assert {m.attributes[RETRIES] for m in handler.acked} == {1}
    assert dlq == {}


def test_retried_copies_run_side_by_side_at_concurrency_4(
    harness: RedisStreamsHarness,
) -> None:
    # Given four workers' worth of concurrency and a slow second delivery
    handler = FailsFirstDelivery(pause=0.1)
    processor, dlq, counts = processor_for(handler)
    harness.publish(b"%d" % i for i in range(8))
    # When every message comes back by a delayed retry (count 2, not a first delivery)
    with running(harness.adapter(missive.RawMessage, processor, concurrency=4)):
        wait_until(lambda: len(handler.acked) == 8, "every retry is handled")
        wait_until(lambda: harness.remaining() == 0, "the stream and the set hold nothing")
    # Then the retries ran together: their last delivery ended cleanly, none is a suspect
    assert sorted(counts.counts) == [1] * 8 + [2] * 8
    assert handler.most > 1
    assert dlq == {}


def test_another_group_on_the_stream_skips_the_copies(harness: RedisStreamsHarness) -> None:
    # Given a second group reading the same stream, which handles every message
    other: list[missive.Message] = []

    def record(message: missive.Message, ctx: Ctx) -> None:
        other.append(message)
        ctx.ack()

    other_processor, _, _ = processor_for(record)
    handler = FailsFirstDelivery()
    processor, _, _ = processor_for(handler)
    harness.publish(b"%d" % i for i in range(20))
    with (
        running(harness.adapter(missive.RawMessage, processor)),
        running(harness.adapter(missive.RawMessage, other_processor, group="other")),
    ):
        # When the first group retries each message later
        wait_until(lambda: len(handler.acked) == 20, "every retry is handled")
        wait_until(lambda: harness.remaining() == 0, "the first group holds nothing")
        time.sleep(0.3)  # room for the other group to see the copies
    # Then the other group handled each message once: the copies were not for it
    assert sorted(m.raw_data for m in other) == sorted(b"%d" % i for i in range(20))
    assert all(RETRIES not in m.attributes for m in other)
    harness.client.xgroup_destroy(harness.stream, "other")


def test_a_copy_redelivered_after_a_crash_is_a_suspect_and_keeps_its_count(
    harness: RedisStreamsHarness,
) -> None:
    # Given a transport that retried an entry later with no delay, and read its copy
    harness.publish([b"one"])
    processor, _, _ = processor_for(lambda message, ctx: ctx.ack())
    adapter = harness.adapter(missive.RawMessage, processor, claim_idle_ms=50)
    transport = StreamsTransport(adapter)
    transport.connect()
    batch = transport.receive(10, 0.1)
    [entry_id] = batch.handles
    message = missive.RawMessage(batch.bodies[0], batch.ids[0], batch.attributes[0])
    transport.retry_later(entry_id, message, 0.0, {RETRIES: 1, FIRST_ATTEMPT: 1.5, HISTORY: []})
    time.sleep(0.15)  # the mover's shortest wait between two looks
    batch = transport.receive(10, 0.1)
    assert (batch.ids, batch.counts, batch.retried) == ([entry_id], [2], {0})
    assert batch.handles != [entry_id]
    assert batch.attributes[0][RETRIES] == 1
    assert batch.attributes[0][FIRST_ATTEMPT] == 1.5
    # When it is not acked (the worker died) and another consumer claims it
    time.sleep(0.1)
    other = StreamsTransport(harness.adapter(missive.RawMessage, processor, claim_idle_ms=50))
    other.connect()
    try:
        claimed = other.receive(10, 0.1)
        # Then it comes with the count going on, as a redelivery (run alone), same id
        assert (claimed.ids, claimed.counts, claimed.retried) == ([entry_id], [3], None)
        assert claimed.suspect(0)
        # and handed back unstarted, its count stays the same
        other.hand_back(claimed, 0)
        other._next_claim = 0.0
        again = other.receive(10, 0.1)
        assert (again.ids, again.counts) == ([entry_id], [3])
    finally:
        other.close()
        transport.close()


def test_a_waiting_retry_is_readable_json_in_the_sorted_set(
    harness: RedisStreamsHarness,
) -> None:
    # Given a worker that retries a message in a minute
    processor, _, _ = processor_for(lambda message, ctx: ctx.retry(delay=60))
    entry_id = harness.client.xadd(harness.stream, {"data": b'{"order": 7}'})
    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: harness.client.zcard(harness.delayed), "the retry is kept")
    # When the set is read with ZRANGE ... WITHSCORES
    [(member, score)] = harness.client.zrange(harness.delayed, 0, -1, withscores=True)
    # Then the member is JSON: a token and the fields to add back, due in about 60 s
    copy = json.loads(member)
    fields = dict(zip(copy["fields"][::2], copy["fields"][1::2], strict=True))
    assert fields["data"] == '{"order": 7}'
    assert fields["x-missive-id"] == entry_id.decode()
    assert fields["x-missive-retries"] == "1"
    assert json.loads(fields["x-missive-history"])[0]["delay"] == 60
    assert copy["token"]
    assert score / 1000 == pytest.approx(time.time() + 60, abs=5)


def test_pub_sub_keeps_no_delayed_retry_and_dead_letters_saying_so() -> None:
    require("redis")
    pubsub = RedisPubSubHarness()
    try:
        handler = FailsFirstDelivery()
        processor, dlq, _ = processor_for(handler)
        with running(pubsub.adapter(missive.RawMessage, processor)):
            pubsub.publish([b"once"])
            wait_until(lambda: dlq, "the message is dead-lettered")
        [(_, reason)] = dlq.values()
        assert "not retried later: this transport cannot delay a retry" in reason
        assert handler.acked == []
    finally:
        pubsub.close()


def test_a_member_that_is_not_a_copy_is_dead_lettered_not_left_in_the_set(
    harness: RedisStreamsHarness,
) -> None:
    # Given a member written by hand that is not a copy, due now
    harness.client.zadd(harness.delayed, {"not json": 0})
    processor, dlq, _ = processor_for(lambda message, ctx: ctx.ack())
    # When a worker runs
    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: dlq, "the member is dead-lettered")
        wait_until(lambda: harness.remaining() == 0, "the stream and the set hold nothing")
    # Then it went to the DLQ, kept whole, as an entry without the message field
    [(message, reason)] = dlq.values()
    assert "no 'data' field" in reason
    assert message.attributes["fields"]["x-missive-unreadable"] == b"not json"
