"""Concurrency in the delivery loop: limits, ordering keys, exact acks, async, stops."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import missive
from missive.runtime import Capability
from missive.testing.conformance import MemoryHarness, running, wait_until
from tests.runtime.fake import Row, ScriptedAdapter, ScriptedTransport

Ctx = missive.HandlingContext[missive.RawMessage]


@pytest.fixture
def harness() -> Iterator[MemoryHarness]:
    h = MemoryHarness()
    yield h
    h.close()


class Gauge:
    """Counts the handlers running at once, and the most seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = self.most = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


def test_at_most_concurrency_messages_are_handled_at_once(harness: MemoryHarness) -> None:
    # Given 40 messages whose handler waits 20 ms, and an adapter with concurrency 4
    gauge, done = Gauge(), []
    processor: missive.Processor[missive.RawMessage] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def slow(message: missive.RawMessage, ctx: Ctx) -> None:
        with gauge:
            time.sleep(0.02)
        done.append(message.raw_data)
        ctx.ack()

    harness.publish([b"%d" % i for i in range(40)])
    # When it consumes them
    with running(harness.adapter(missive.RawMessage, processor, concurrency=4)):
        wait_until(lambda: len(done) == 40, "every message is handled")
        wait_until(lambda: harness.remaining() == 0, "every message is acked")
    # Then four ran at once, never more, and each message was handled once
    assert gauge.most == 4
    assert sorted(done) == sorted(b"%d" % i for i in range(40))


def test_messages_with_one_ordering_key_are_handled_one_at_a_time_in_order(
    harness: MemoryHarness,
) -> None:
    # Given messages "key:n" for 4 keys, 10 each, interleaved
    per_key: dict[bytes, Gauge] = {}
    seen: dict[bytes, list[int]] = {}
    everyone = Gauge()
    processor: missive.Processor[missive.RawMessage] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def handle(message: missive.RawMessage, ctx: Ctx) -> None:
        key, n = message.raw_data.split(b":")
        with everyone, per_key[key]:
            time.sleep(0.005)
            seen.setdefault(key, []).append(int(n))
        ctx.ack()

    keys = [b"a", b"b", b"c", b"d"]
    per_key.update((key, Gauge()) for key in keys)
    harness.publish([key + b":%d" % n for n in range(10) for key in keys])
    # When an adapter with concurrency 8 orders them by their key
    adapter = harness.adapter(
        missive.RawMessage,
        processor,
        concurrency=8,
        ordering_key=lambda m: m.raw_data.split(b":")[0],
    )
    with running(adapter):
        wait_until(lambda: sum(map(len, seen.values())) == 40, "every message is handled")
    # Then each key's messages ran one at a time, in delivery order; keys ran side by side
    assert all(gauge.most == 1 for gauge in per_key.values())
    assert seen == {key: list(range(10)) for key in keys}
    assert everyone.most > 1


def test_an_ordering_key_that_raises_dead_letters_its_message_with_the_reason(
    harness: MemoryHarness,
) -> None:
    # Given an ordering key that fails on one message
    dlq: dict[bytes, Any] = {}
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    processor.set_dlq(dlq)
    done: list[bytes] = []

    @processor.handle_for(lambda m: True)
    def handle(message: missive.RawMessage, ctx: Ctx) -> None:
        done.append(message.raw_data)
        ctx.ack()

    def by_prefix(message: missive.RawMessage) -> bytes:
        if message.raw_data == b"bad":
            raise KeyError("no prefix")
        return message.raw_data[:1]

    harness.publish([b"ok", b"bad", b"ok2"])
    # When an adapter orders by it
    adapter = harness.adapter(missive.RawMessage, processor, concurrency=2, ordering_key=by_prefix)
    with running(adapter):
        wait_until(lambda: len(done) == 2 and len(dlq) == 1, "all three are settled")
    # Then that message is dead-lettered, saying the ordering key raised, the rest handled
    [(message, reason)] = dlq.values()
    assert message.raw_data == b"bad"
    assert "ordering_key 'by_prefix'" in reason
    assert "KeyError" in reason


class OutOfOrder(ScriptedTransport):
    """A transport whose acks are by id: it takes rows settled behind a running one."""

    def ack_out_of_order(self, handles: list[Any]) -> bool:
        self.calls.append(("ack_out_of_order", list(handles)))
        return True


def rows(*bodies: bytes) -> list[Row]:
    return [(body, b"id-" + body, 1, None) for body in bodies]


@pytest.mark.parametrize("transport_cls", [ScriptedTransport, OutOfOrder])
def test_a_row_still_running_is_never_covered_by_an_ack(
    transport_cls: type[ScriptedTransport],
) -> None:
    # Given four rows, the first of which finishes last: it waits until the others are
    # done and the loop had time to settle them, and notes what was settled by then
    settled_before: list[tuple[Any, ...]] = []
    others: list[bytes] = []
    processor: missive.Processor[missive.RawMessage] = missive.Processor()

    @processor.handle_for(lambda m: m.raw_data == b"first")
    def first(message: missive.RawMessage, ctx: Ctx) -> None:
        wait_until(lambda: len(others) == 3, "the others are handled")
        time.sleep(0.3)
        settled_before.extend(adapter.transports[0].settled())
        ctx.ack()

    @processor.handle_for(lambda m: m.raw_data != b"first")
    def other(message: missive.RawMessage, ctx: Ctx) -> None:
        others.append(message.raw_data)
        ctx.ack()

    # When an adapter with concurrency 4 handles them
    adapter = ScriptedAdapter(
        processor,
        lambda a: transport_cls([rows(b"first", b"b", b"c", b"d"), None], a),
        concurrency=4,
    )
    adapter.run()
    [transport] = adapter.transports
    # Then nothing acked row 1 (or, cumulatively, anything after it) before it finished
    acked_before = [handle for call in settled_before for handle in call[1]]
    assert 1 not in acked_before
    if transport_cls is OutOfOrder:
        # rows 2 to 4 were acked on their own meanwhile, row 1 alone afterwards
        assert sorted(acked_before) == [2, 3, 4]
        assert [c for c in transport.calls if c[0] == "ack"] == [("ack", [1])]
    else:
        # a cumulative transport waits: one ack covers all four, once row 1 is done
        assert acked_before == []
        assert [c for c in transport.calls if c[0] == "ack"] == [("ack", [1, 2, 3, 4])]


def test_a_stop_hands_back_what_no_worker_started_and_waits_for_the_rest() -> None:
    # Given six rows on two workers, the handlers slow, and a stop once two run
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    both = threading.Barrier(2, timeout=5)

    @processor.handle_for(lambda m: True)
    def slow(message: missive.RawMessage, ctx: Ctx) -> None:
        if both.wait() == 0:
            adapter.stop()
        time.sleep(0.1)
        ctx.ack()

    adapter = ScriptedAdapter(
        processor,
        lambda a: ScriptedTransport([rows(*(b"%d" % i for i in range(6)))], a),
        concurrency=2,
    )
    adapter.run()
    [transport] = adapter.transports
    # Then the two running ones were acked, and the four not started handed back
    settled = transport.settled()
    acked = sorted(h for call in settled if call[0] == "ack" for h in call[1])
    [(_, handed_back)] = [call for call in settled if call[0] == "hand_back"]
    assert acked == [1, 2]
    assert sorted(handed_back) == [3, 4, 5, 6]


def test_a_handler_still_running_after_graceful_timeout_is_left_unacked_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a handler that does not return before the stop's graceful timeout
    release = threading.Event()
    processor: missive.Processor[missive.RawMessage] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def stuck(message: missive.RawMessage, ctx: Ctx) -> None:
        release.wait(10)
        ctx.ack()

    def stop() -> None:
        time.sleep(0.05)
        adapter.stop()

    adapter = ScriptedAdapter(
        processor,
        lambda a: ScriptedTransport([rows(b"stuck"), stop], a),
        concurrency=2,
        graceful_timeout=0.2,
    )
    caplog.set_level(logging.WARNING, logger="missive.runtime")
    # When the adapter stops
    started = time.monotonic()
    adapter.run()
    took = time.monotonic() - started
    release.set()
    [transport] = adapter.transports
    # Then run() returned after the timeout, the message unacked, its id in a WARNING
    assert took < 5
    assert not [call for call in transport.settled() if call[0] == "ack"]
    [line] = [r.getMessage() for r in caplog.records if "graceful_timeout" in r.getMessage()]
    assert "b'id-stuck'" in line
    assert "delivers them again" in line


class NoRedelivery(ScriptedTransport):
    capabilities: ClassVar[Capability] = Capability.NONE


def test_without_redelivery_a_stop_waits_for_the_handler_however_long() -> None:
    # Given a transport that cannot redeliver, and a handler slower than graceful_timeout
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    done: list[bytes] = []

    @processor.handle_for(lambda m: True)
    def slow(message: missive.RawMessage, ctx: Ctx) -> None:
        time.sleep(0.3)
        done.append(message.raw_data)
        ctx.ack()

    adapter = ScriptedAdapter(
        processor,
        lambda a: NoRedelivery([rows(b"slow"), a.stop], a),
        concurrency=2,
        graceful_timeout=0.01,
    )
    # When it stops, then the message was handled and acked first: it would be lost else
    adapter.run()
    [transport] = adapter.transports
    assert done == [b"slow"]
    assert ("ack", [1]) in transport.calls


def test_sync_and_async_handlers_mix_and_share_the_runs_event_loop(
    harness: MemoryHarness,
) -> None:
    # Given an async before_processing hook that opens a "client" on its loop, an async
    # handler and a sync one
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    loops: list[asyncio.AbstractEventLoop] = []
    threads: dict[str, set[str]] = {"sync": set(), "async": set()}
    done: list[bytes] = []

    @processor.before_processing
    async def open_client(pctx: missive.ProcessingContext[missive.RawMessage]) -> None:
        pctx.state.loop = asyncio.get_running_loop()

    @processor.handle_for(lambda m: m.raw_data.startswith(b"a"))
    async def wait(message: missive.RawMessage, ctx: Ctx) -> None:
        await asyncio.sleep(0.01)
        assert ctx.processing_ctx is not None
        loops.append(ctx.processing_ctx.state.loop)
        assert asyncio.get_running_loop() is ctx.processing_ctx.state.loop
        threads["async"].add(threading.current_thread().name)
        done.append(message.raw_data)
        ctx.ack()

    @processor.handle_for(lambda m: m.raw_data.startswith(b"s"))
    def block(message: missive.RawMessage, ctx: Ctx) -> None:
        time.sleep(0.01)
        threads["sync"].add(threading.current_thread().name)
        done.append(message.raw_data)
        ctx.ack()

    harness.publish([b"a%d" % i for i in range(20)] + [b"s%d" % i for i in range(20)])
    # When an adapter with concurrency 8 runs them
    with running(harness.adapter(missive.RawMessage, processor, concurrency=8)):
        wait_until(lambda: len(done) == 40, "every message is handled")
    # Then the async ones ran on the hook's loop, the sync ones on other threads
    assert len(set(map(id, loops))) == 1
    assert threads["sync"].isdisjoint(threads["async"])


def test_sync_hooks_and_dlq_writes_never_run_on_the_event_loop(harness: MemoryHarness) -> None:
    # Given an async handler that raises, a sync hook and a DLQ that note their thread
    where: dict[str, set[str]] = {"hook": set(), "dlq": set(), "loop": set()}

    class ThreadNotingDLQ(dict[bytes, Any]):
        def __setitem__(self, key: bytes, value: Any) -> None:
            where["dlq"].add(threading.current_thread().name)
            super().__setitem__(key, value)

    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    dlq = ThreadNotingDLQ()
    processor.set_dlq(dlq)

    @processor.before_handling
    def note(pctx: Any, hctx: Any) -> None:
        where["hook"].add(threading.current_thread().name)

    @processor.handle_for(lambda m: True)
    async def fail(message: missive.RawMessage, ctx: Ctx) -> None:
        where["loop"].add(threading.current_thread().name)
        raise ValueError("no")

    harness.publish([b"1", b"2", b"3"])
    # When they run with concurrency 2
    with running(harness.adapter(missive.RawMessage, processor, concurrency=2)):
        wait_until(lambda: len(dlq) == 3, "the three are dead-lettered")
    # Then neither the hook nor the DLQ write ran on the event loop's thread
    assert where["loop"]
    assert where["hook"].isdisjoint(where["loop"])
    assert where["dlq"].isdisjoint(where["loop"])


def test_an_async_handler_runs_at_concurrency_1_too(harness: MemoryHarness) -> None:
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    done: list[bytes] = []

    @processor.handle_for(lambda m: True)
    async def handle(message: missive.RawMessage, ctx: Ctx) -> None:
        await asyncio.sleep(0)
        done.append(message.raw_data)
        ctx.ack()

    harness.publish([b"x", b"y"])
    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: done == [b"x", b"y"], "both are handled, in order")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_concurrency_must_be_a_whole_number_from_1(bad: Any) -> None:
    with pytest.raises(ValueError, match="concurrency must be a whole number from 1 up"):
        MemoryHarness().adapter(missive.RawMessage, missive.Processor(), concurrency=bad)


def test_graceful_timeout_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="graceful_timeout must be 0 s or more"):
        MemoryHarness().adapter(missive.RawMessage, missive.Processor(), graceful_timeout=-1)


class Draining(NoRedelivery):
    """No redelivery, and a drain: like Redis Pub/Sub."""

    drain_timeout = 0.2


def test_rows_still_waiting_when_the_drain_ends_are_dead_lettered_and_run_returns() -> None:
    # Given a transport that drains on a stop, a slow handler on two workers, and eight
    # rows arriving while it drains
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    dlq: dict[bytes, Any] = {}
    processor.set_dlq(dlq)
    handled: list[bytes] = []

    @processor.handle_for(lambda m: True)
    def slow(message: missive.RawMessage, ctx: Ctx) -> None:
        time.sleep(0.3)
        handled.append(message.raw_data)
        ctx.ack()

    adapter = ScriptedAdapter(
        processor,
        lambda a: Draining([[], a.stop, rows(*(b"%d" % i for i in range(8))), None], a),
        concurrency=2,
    )
    # When it stops, then run() returns: the rows no worker started by the drain's end
    # are dead-lettered (with why), the others handled, and every one acked once
    adapter.run()
    [transport] = adapter.transports
    assert len(handled) + len(dlq) == 8
    assert dlq
    assert all("drain_timeout=0.2 s passed" in reason for _, reason in dlq.values())
    acked = sorted(h for call in transport.settled() if call[0] == "ack" for h in call[1])
    assert acked == list(range(1, 9))
