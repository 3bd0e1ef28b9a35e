"""The delivery loop against a scripted transport: each verdict, acks, stops, faults."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

import missive
from missive.dlq.sqlite import SQLiteDLQ
from missive.events import Observer
from missive.runtime import Capability
from tests.runtime.fake import ConnectRefusedError, Row, ScriptedAdapter, ScriptedTransport, Step

Processor = missive.Processor[missive.RawMessage]


def processor(dlq: dict[bytes, Any] | None = None) -> Processor:
    p: Processor = missive.Processor()

    @p.handle_for(lambda m: m.raw_data.startswith(b"ack"))
    def ack(message: missive.RawMessage, ctx: missive.HandlingContext[missive.RawMessage]) -> None:
        ctx.ack()

    @p.handle_for(lambda m: m.raw_data == b"nack")
    def nack(message: missive.RawMessage, ctx: missive.HandlingContext[missive.RawMessage]) -> None:
        ctx.nack()

    @p.handle_for(lambda m: m.raw_data == b"raise")
    def fail(message: missive.RawMessage, ctx: missive.HandlingContext[missive.RawMessage]) -> None:
        raise RuntimeError("boom")

    if dlq is not None:
        p.set_dlq(dlq)
    return p


def rows(*bodies: bytes, count: int | None = 1) -> list[Row]:
    return [(body, b"id-" + body, count, None) for body in bodies]


def run(
    script: list[Step],
    proc: Processor | None = None,
    transport_cls: type[ScriptedTransport] = ScriptedTransport,
    **settings: Any,
) -> ScriptedTransport:
    adapter = ScriptedAdapter(
        processor({}) if proc is None else proc,
        lambda a: transport_cls(script, a),
        **settings,
    )
    adapter.run()
    [transport] = adapter.transports
    return transport


def test_acks_are_coalesced_and_sent_before_the_next_receive() -> None:
    t = run([rows(b"ack1", b"ack2", b"ack3"), None])
    assert t.settled() == [("ack", [1, 2, 3])]
    assert t.calls[-2:] == [("flush",), ("close",)]


def test_acks_go_out_when_the_transport_s_limit_is_owed() -> None:
    class Limited(ScriptedTransport):
        ack_limit = 2

    t = run([rows(b"ack1", b"ack2", b"ack3"), None], transport_cls=Limited)
    assert t.settled() == [("ack", [1, 2]), ("ack", [3])]


def test_a_redelivery_is_acked_and_flushed_at_once() -> None:
    t = run([rows(b"ack1") + rows(b"ack2", count=2) + rows(b"ack3"), None])
    i = t.calls.index(("ack", [1, 2]))
    assert t.calls[i + 1] == ("flush",)
    assert t.settled() == [("ack", [1, 2]), ("ack", [3])]


def test_a_nack_is_requeued_after_the_earlier_acks() -> None:
    t = run([rows(b"ack1", b"nack", b"ack2"), None])
    assert t.settled() == [("ack", [1]), ("requeue", 2, 0.0), ("ack", [3])]


def test_a_nack_waits_longer_each_redelivery_where_the_transport_delays() -> None:
    class Delaying(ScriptedTransport):
        capabilities: ClassVar[Capability] = (
            ScriptedTransport.capabilities | Capability.DELAYED_REQUEUE
        )

    t = run(
        [rows(b"nack"), rows(b"nack", count=3), rows(b"nack", count=20), None],
        transport_cls=Delaying,
        retry_delay=1.0,
    )
    assert [c[2] for c in t.settled()] == [1.0, 4.0, 30.0]


def test_a_nack_counted_in_the_dlq_waits_after_the_counted_attempts(tmp_path: Path) -> None:
    class CountingDelaying(ScriptedTransport):
        capabilities: ClassVar[Capability] = (
            ScriptedTransport.capabilities | Capability.DELAYED_REQUEUE | Capability.COUNT_IN_DLQ
        )

    # a first delivery, then redeliveries the transport cannot count (None)
    script: list[Step] = [rows(b"nack"), *[rows(b"nack", count=None)] * 3, None]
    with SQLiteDLQ(str(tmp_path / "dlq.db")) as dlq:
        proc = processor()
        proc.set_dlq(dlq)
        t = run(script, proc, transport_cls=CountingDelaying, retry_delay=1.0)
    # the DLQ counted deliveries 2, 3 and 4: the delay doubles each time
    assert [c[2] for c in t.settled()] == [1.0, 2.0, 4.0, 8.0]


def test_a_failure_is_dead_lettered_and_acked() -> None:
    dlq: dict[bytes, Any] = {}
    t = run([rows(b"raise"), None], processor(dlq))
    assert t.settled() == [("ack", [1])]
    assert "RuntimeError" in dlq[b"id-raise"][1]


def test_no_dlq_on_a_redelivering_transport_requeues_after_retry_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = run([rows(b"raise"), None], processor(None), retry_delay=2.5)
    assert t.settled() == [("requeue", 1, 2.5)]
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "b'id-raise'" in error
    assert "Requeuing it in 2.5 s." in error
    assert "boom" not in error


class Lossy(ScriptedTransport):
    capabilities: ClassVar[Capability] = Capability.NONE
    cannot_redeliver: ClassVar[str] = "Fake cannot redeliver"


class Stopping(Lossy):
    stop_on_loss: ClassVar[bool] = True


def test_a_nack_without_redelivery_is_dead_lettered_with_the_transport_s_reason() -> None:
    dlq: dict[bytes, Any] = {}
    t = run([rows(b"nack"), None], processor(dlq), transport_cls=Lossy)
    assert t.settled() == [("ack", [1])]
    assert dlq[b"id-nack"][1] == "nacked by its handler; Fake cannot redeliver"


def test_a_lossy_transport_logs_the_loss_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    t = run([rows(b"raise", b"ack"), None], processor(None), transport_cls=Lossy)
    assert t.settled() == [("ack", [2])]
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "is lost, as Fake cannot redeliver" in error
    assert "b'id-raise'" in error


def test_a_stopping_transport_raises_with_the_row_s_place_and_reads_no_more() -> None:
    script: list[Step] = [rows(b"ack", b"raise", b"ack2"), rows(b"ack3"), None]
    adapter = ScriptedAdapter(processor(None), lambda a: Stopping(script, a))
    with pytest.raises(missive.HandlingError) as info:
        adapter.run()
    assert "(row 2)" in info.value.__notes__
    [t] = adapter.transports
    assert t.settled() == [("ack", [1])]
    assert ("receive", 1) not in t.calls
    assert t.calls[-1] == ("close",)


def test_poison_by_count_and_problem_rows_are_dead_lettered_unhandled() -> None:
    dlq: dict[bytes, Any] = {}
    script: list[Step] = [
        [(b"ack", b"a", 4, None), (b"ack", b"b", 1, "no data field"), (b"ack", b"c", 3, None)],
        None,
    ]
    handled: list[bytes] = []
    proc = processor(dlq)
    proc.before_handling(lambda p, h: handled.append(h.message.message_id))
    run(script, proc, max_deliveries=3)
    assert "delivered 4 times, more than max_deliveries=3" in dlq[b"a"][1]
    assert dlq[b"b"][1] == "no data field"
    assert handled == [b"c"]


def test_a_stop_mid_batch_hands_back_the_unstarted_rows() -> None:
    adapter_box: list[ScriptedAdapter] = []
    proc = processor({})

    @proc.handle_for(lambda m: m.raw_data == b"stop")
    def stop(message: missive.RawMessage, ctx: missive.HandlingContext[missive.RawMessage]) -> None:
        adapter_box[0].stop()
        ctx.ack()

    adapter = ScriptedAdapter(
        proc, lambda a: ScriptedTransport([rows(b"ack", b"stop", b"x", b"y")], a)
    )
    adapter_box.append(adapter)
    adapter.run()
    [t] = adapter.transports
    assert t.settled() == [("ack", [1, 2]), ("hand_back", [3, 4])]


def test_without_hand_back_the_received_rows_are_handled_then_drained() -> None:
    class Draining(Lossy):
        drain_timeout = 5.0

    box: list[ScriptedAdapter] = []
    proc = processor({})

    @proc.handle_for(lambda m: m.raw_data == b"stop")
    def stop(message: missive.RawMessage, ctx: missive.HandlingContext[missive.RawMessage]) -> None:
        box[0].stop()
        ctx.ack()

    script: list[Step] = [rows(b"stop", b"ack1"), rows(b"ack2"), None]
    adapter = ScriptedAdapter(proc, lambda a: Draining(script, a))
    box.append(adapter)
    adapter.run()
    [t] = adapter.transports
    assert t.settled() == [("ack", [1]), ("ack", [2]), ("ack", [3])]
    assert ("begin_drain",) in t.calls


def test_without_hand_back_the_unstarted_rows_fall_under_the_drain_deadline() -> None:
    class Draining(Lossy):
        drain_timeout = 0.05

    box: list[ScriptedAdapter] = []
    dlq: dict[bytes, Any] = {}
    proc = processor(dlq)

    @proc.handle_for(lambda m: m.raw_data.startswith(b"slow"))
    def slow(message: missive.RawMessage, ctx: missive.HandlingContext[missive.RawMessage]) -> None:
        box[0].stop()
        time.sleep(0.03)
        ctx.ack()

    script: list[Step] = [rows(b"slow1", b"slow2", b"slow3", b"slow4"), rows(b"slow5"), None]
    adapter = ScriptedAdapter(proc, lambda a: Draining(script, a))
    box.append(adapter)
    adapter.run()
    [t] = adapter.transports
    # the row in hand is finished; then, after begin_drain, the rest is handled until
    # the deadline and dead-lettered after it, those received later as well
    assert t.calls.index(("begin_drain",)) < t.calls.index(("ack", [2]))
    assert {b"id-slow4", b"id-slow5"} <= set(dlq)  # they start 60 ms or more after it
    assert b"id-slow1" not in dlq
    assert b"id-slow2" not in dlq
    assert all("drain_timeout=0.05 s passed); Fake cannot redeliver" in r for _, r in dlq.values())
    assert t.settled() == [("ack", [n]) for n in range(1, 6)]


def test_a_reconnect_worthy_fault_reconnects_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    t = run(
        [
            ConnectRefusedError("refused"),
            ConnectRefusedError("refused"),
            rows(b"ack"),
            ConnectionError("reset"),
            None,
        ],
        max_reconnect_delay=0.01,
    )
    assert [c[0] for c in t.calls].count("connect") == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "connection to Fake lost or refused" in warnings[0].getMessage()
    # the count of failures in a row starts again after a connection that worked
    assert [r.args[4] for r in warnings] == [1, 2, 1]  # type: ignore[index]
    assert t.settled() == [("ack", [1])]


def test_a_fatal_fault_closes_and_propagates() -> None:
    adapter = ScriptedAdapter(processor({}), lambda a: ScriptedTransport([ValueError("bad")], a))
    with pytest.raises(ValueError, match="bad"):
        adapter.run()
    assert adapter.transports[0].calls[-1] == ("close",)


def test_stop_from_another_thread_wakes_the_transport() -> None:
    woken = threading.Event()

    class Waiting(ScriptedTransport):
        def receive(self, max_messages: int, timeout: float) -> Any:
            self.batch.clear()
            woken.wait(5)
            return self.batch

        def wake(self, from_signal: bool) -> None:
            self.calls.append(("wake", from_signal))
            woken.set()

    adapter = ScriptedAdapter(processor({}), lambda a: Waiting([], a))
    thread = threading.Thread(target=adapter.run)
    thread.start()
    assert adapter.wait_ready(5)
    adapter.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert ("wake", False) in adapter.transports[0].calls


class Recording(Observer):
    def __init__(self) -> None:
        self.events: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        attr = object.__getattribute__(self, name)
        # The heartbeats (polled, backlog) are checked by the events suite.
        if name in Observer.__dict__ and name not in {"polled", "backlog"} and name[0] != "_":
            events = object.__getattribute__(self, "events")

            def record(*args: Any) -> None:
                events.append(name)

            return record
        return attr


def test_the_events_of_each_outcome_come_in_order() -> None:
    dlq: dict[bytes, Any] = {}
    proc = processor(dlq)
    observer = Recording()
    proc.add_observer(observer)
    run([rows(b"ack"), rows(b"nack"), [(b"ack", b"p", 9, None)], None], proc, max_deliveries=3)
    events = [e for e in observer.events if not e.startswith("handling_")]
    assert events == [
        "worker_started",
        "message_received",
        "acked",
        "message_received",
        "requeued",
        "message_received",
        "dead_lettered",
        "acked",
        "worker_stopping",
    ]


def test_connection_events() -> None:
    proc = processor({})
    observer = Recording()
    proc.add_observer(observer)
    run([ConnectionError("reset"), None], proc, max_reconnect_delay=0.01)
    assert observer.events == [
        "worker_started",
        "connection_lost",
        "connection_restored",
        "worker_stopping",
    ]


def test_processing_hooks_run_once_around_the_loop() -> None:
    proc = processor({})
    seen: list[str] = []
    proc.before_processing(lambda p: seen.append("before"))
    proc.after_processing(lambda p: seen.append("after"))
    run([ConnectionError("reset"), rows(b"ack"), None], proc, max_reconnect_delay=0.01)
    assert seen == ["before", "after"]


class RequeueThenStop(ScriptedTransport):
    stop_on_loss: ClassVar[bool] = True


def test_a_redelivering_transport_that_stops_on_loss_requeues_then_raises() -> None:
    # Given a transport that redelivers but stops on a message neither handled nor stored
    script: list[Step] = [rows(b"ack", b"raise", b"ack2"), None]
    adapter = ScriptedAdapter(processor(None), lambda a: RequeueThenStop(script, a))
    # When a row cannot be handled and there is no DLQ
    with pytest.raises(missive.HandlingError) as info:
        adapter.run()
    # Then it went back to the transport (after the earlier ack) and run() raised
    assert "(row 2)" in info.value.__notes__
    [t] = adapter.transports
    assert t.settled() == [("ack", [1]), ("requeue", 2, 0.0)]
    assert t.calls[-1] == ("close",)


@pytest.mark.parametrize("transport_cls", [ScriptedTransport, Lossy])
def test_a_first_delivery_is_settled_as_the_policy_settles_a_redelivery(
    transport_cls: type[ScriptedTransport],
) -> None:
    # The loop decides a plain first delivery itself (its fast path), and anything else
    # through Policy.handle: both give the same settling, whatever the outcome.
    bodies = (b"ack", b"nack", b"raise", b"unrouted")
    first_dlq: dict[bytes, Any] = {}
    again_dlq: dict[bytes, Any] = {}
    first = run([rows(*bodies, count=1), None], processor(first_dlq), transport_cls)
    again = run([rows(*bodies, count=2), None], processor(again_dlq), transport_cls)
    # (a redelivery's ack is sent at once, a first delivery's with the others: compare rows)
    assert per_row(first) == per_row(again)
    assert {k: str(v[1]) for k, v in first_dlq.items()} == {
        k: str(v[1]) for k, v in again_dlq.items()
    }


def per_row(transport: ScriptedTransport) -> list[tuple[Any, ...]]:
    """The settling calls, one per row (an ack of several handles counts for each)."""
    settled: list[tuple[Any, ...]] = []
    for call in transport.settled():
        if call[0] == "ack":
            settled += [("ack", handle) for handle in call[1]]
        else:
            settled.append(call)
    return settled
