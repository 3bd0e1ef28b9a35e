"""The events suite: every adapter tells its observers what became of each message, in order.

Public, like :class:`~missive.testing.conformance.AdapterSuite`, and used the same way:
from a test module with a ``harness`` fixture::

    from missive.testing.conformance import AdapterSuite, EventsSuite

    class TestConformance(AdapterSuite, EventsSuite):
        pass

Each test registers a :class:`~missive.testing.conformance.RecordingObserver` on the
adapter and checks the events of one outcome against the order every adapter keeps
(docs/adapters.md): for an acked message ``message_received``, ``handling_started``,
``handling_finished``, ``acked``; a dead letter comes before the ack that settles it;
a failed DLQ write before the requeue, the loss or the error that follows. The
harness's capability flags decide which tests apply; the others are skipped, saying why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import missive
from missive.dlq.sqlite import SQLiteDLQ
from missive.events import Observer
from missive.runtime import Capability
from missive.testing.conformance.adapter_suite import publish_until_handled
from missive.testing.conformance.harness import (
    KILL_CONNECTION,
    PERSISTENCE,
    REDELIVERY,
    Harness,
    needs,
)
from missive.testing.conformance.support import (
    Recorder,
    RecordingObserver,
    running,
    running_allowing,
    wait_until,
)

Ctx = missive.HandlingContext[Any]

#: The events of a message handled and acked, in order.
ACKED = ["message_received", "handling_started", "handling_finished", "acked"]
#: The events of a message handled, then dead-lettered (a failure, or a nack on a
#: transport that cannot redeliver) and acked.
DEAD_LETTERED = [*ACKED[:3], "dead_lettered", "acked"]
#: The event names of :class:`~missive.events.Observer`.
EVENTS = sorted(name for name in vars(Observer) if not name.startswith("_"))


def observed(
    harness: Harness, processor: missive.Processor[Any]
) -> tuple[missive.Adapter[Any], RecordingObserver]:
    """A new adapter of ``harness`` running ``processor``, and the observer recording it."""
    adapter = harness.adapter(missive.RawMessage, processor)
    observer = RecordingObserver()
    adapter.add_observer(observer)
    return adapter, observer


def transport_capabilities(adapter: missive.Adapter[Any]) -> Capability:
    """What the transport of ``adapter`` says it can do; NONE for an adapter without one."""
    try:
        transport = adapter.transport()
    except NotImplementedError:
        return Capability.NONE
    transport.close()
    return type(transport).capabilities


def one_message(observer: RecordingObserver) -> bytes:
    """The id of the one message received (maybe several times)."""
    ids = set(observer.message_ids())
    assert len(ids) == 1, f"expected one message, received {len(ids)}"
    return ids.pop()


def raising_processor() -> missive.Processor[Any]:
    processor: missive.Processor[Any] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def broken(message: missive.Message, ctx: Ctx) -> None:
        raise KeyError("boom")

    return processor


class FailingDLQ(dict[bytes, Any]):
    """A DLQ whose every write fails."""

    def __setitem__(self, key: bytes, value: Any) -> None:
        raise OSError("the DLQ is full")


class RaisingObserver(Observer):
    """An observer that raises in every event."""


def _raise(self: RaisingObserver, *args: Any) -> None:
    raise RuntimeError("an observer that fails")


for _event in EVENTS:
    setattr(RaisingObserver, _event, _raise)


class EventsSuite:
    """One test per event kind; subclass it where a ``harness`` fixture exists."""

    def test_an_acked_message_is_received_handled_then_acked(self, harness: Harness) -> None:
        # Given an observed adapter whose handler acks
        recorder = Recorder()
        adapter, observer = observed(harness, recorder.processor)
        # When one message is consumed
        with running(adapter):
            harness.publish([b"ack me"])
            wait_until(lambda: "acked" in observer.events(), "the message is acked")
        # Then its events came in order, each with the message
        message_id = one_message(observer)
        assert observer.events(message_id) == ACKED
        [(message, count)] = observer.arguments("message_received")
        assert message.raw_data == b"ack me"
        assert count == 1
        [(pctx, hctx)] = observer.arguments("handling_started")
        assert isinstance(pctx, missive.ProcessingContext)
        assert hctx.message is message
        [(_, finished, outcome, duration)] = observer.arguments("handling_finished")
        assert finished is hctx
        assert outcome is missive.Outcome.ACKED
        assert hctx.handler_name is not None
        assert duration >= 0
        assert observer.arguments("acked") == [(message,)]

    def test_a_nacked_message_is_requeued_then_received_again(self, harness: Harness) -> None:
        needs(harness, REDELIVERY)
        # Given a handler that nacks a message's first delivery and acks the next
        processor: missive.Processor[Any] = missive.Processor()
        seen: list[missive.Message] = []

        @processor.handle_for(lambda m: True)
        def flaky(message: missive.Message, ctx: Ctx) -> None:
            seen.append(message)
            if len(seen) == 1:
                ctx.nack()
            else:
                ctx.ack()

        adapter, observer = observed(harness, processor)
        # When one message is consumed
        with running(adapter):
            harness.publish([b"again"])
            wait_until(lambda: "acked" in observer.events(), "the message is acked")
        # Then it was requeued after its first handling, and acked after its second
        message_id = one_message(observer)
        started = ["message_received", "handling_started", "handling_finished"]
        assert observer.events(message_id) == [*started, "requeued", *ACKED]
        outcomes = [args[2] for args in observer.arguments("handling_finished")]
        assert outcomes == [missive.Outcome.NACKED, missive.Outcome.ACKED]
        [(message, delay)] = observer.arguments("requeued")
        assert message.message_id == message_id
        assert delay >= 0

    def test_a_nacked_message_is_dead_lettered_then_acked_without_redelivery(
        self, harness: Harness
    ) -> None:
        if REDELIVERY in harness.capabilities:
            pytest.skip(f"{harness.name} redelivers nacked messages")
        # Given a handler that nacks, and a DLQ
        processor: missive.Processor[Any] = missive.Processor()
        processor.handle_for(lambda m: True)(lambda message, ctx: ctx.nack())
        dlq: dict[bytes, Any] = {}
        processor.set_dlq(dlq)
        adapter, observer = observed(harness, processor)
        # When one message is consumed
        with running(adapter):
            harness.publish([b"nacked"])
            wait_until(lambda: "acked" in observer.events(), "the message is acked")
        # Then it was dead-lettered, saying it cannot be redelivered, and then acked
        message_id = one_message(observer)
        assert observer.events(message_id) == DEAD_LETTERED
        assert [args[2] for args in observer.arguments("handling_finished")] == [
            missive.Outcome.NACKED
        ]
        [(message, reason)] = observer.arguments("dead_lettered")
        assert "redeliver" in reason
        assert dlq[message_id] == (message, reason)

    def test_a_handler_that_raises_is_finished_with_its_failure_then_dead_lettered(
        self, harness: Harness
    ) -> None:
        # Given a handler that raises, and a DLQ
        processor = raising_processor()
        dlq: dict[bytes, Any] = {}
        processor.set_dlq(dlq)
        adapter, observer = observed(harness, processor)
        # When one message is consumed
        with running(adapter):
            harness.publish([b"breaks"])
            wait_until(lambda: "acked" in observer.events(), "the message is acked")
        # Then handling finished with no outcome and the failure set, then it was
        # dead-lettered with that reason, then acked
        message_id = one_message(observer)
        assert observer.events(message_id) == DEAD_LETTERED
        [(_, hctx, outcome, _)] = observer.arguments("handling_finished")
        assert outcome is None
        assert hctx.failure is not None
        assert "raised KeyError" in hctx.failure
        [(message, reason)] = observer.arguments("dead_lettered")
        assert reason == hctx.failure
        assert dlq[message_id] == (message, reason)

    @pytest.mark.parametrize("dlq", ["failing DLQ", "no DLQ"])
    def test_a_failed_dead_letter_is_reported_then_requeued_lost_or_raised(
        self, harness: Harness, dlq: str
    ) -> None:
        # Given a handler that raises, and a DLQ whose writes fail (or none)
        processor = raising_processor()
        processor.set_dlq(FailingDLQ() if dlq == "failing DLQ" else None)
        adapter, observer = observed(harness, processor)
        adapter.retry_delay = max(adapter.retry_delay, 0.05)  # no busy loop of retries
        redelivers = REDELIVERY in harness.capabilities
        # When one message is consumed (run() may stop with the error: stdin does)
        with running_allowing(adapter, missive.HandlingError, missive.DLQWriteError) as errors:
            harness.publish([b"breaks"])
            after = "requeued" if redelivers else "lost"
            wait_until(lambda: errors or after in observer.events(), f"the message is {after}")
        # Then the failed write was reported after handling finished, with the error
        message_id = observer.message_ids()[0]
        failed = ["message_received", "handling_started", "handling_finished", "dlq_write_failed"]
        events = observer.events(message_id)
        assert events[:4] == failed
        [(message, reason, error), *_] = observer.arguments("dlq_write_failed")
        assert message.message_id == message_id
        assert "raised KeyError" in reason
        if dlq == "failing DLQ":
            assert isinstance(error, OSError)
        else:
            assert error is None
        assert "dead_lettered" not in events
        assert "acked" not in events
        # and then it was requeued (redelivering transports), lost, or run() raised
        if redelivers:
            assert events[4] == "requeued"
        elif errors:
            assert events == failed
        else:
            assert events == [*failed, "lost"]
        if errors:
            assert isinstance(errors[0], missive.HandlingError | missive.DLQWriteError)

    def test_a_poison_message_is_dead_lettered_unhandled_then_acked(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        needs(harness, REDELIVERY)
        # Given a handler that always nacks, on an adapter with max_deliveries=1
        processor: missive.Processor[Any] = missive.Processor()
        processor.handle_for(lambda m: True)(lambda message, ctx: ctx.nack())
        adapter, observer = observed(harness, processor)
        adapter.max_deliveries = 1
        capabilities = transport_capabilities(adapter)
        if capabilities & Capability.DELIVERY_COUNTS:
            dlq: Any = {}
        elif capabilities & Capability.COUNT_IN_DLQ:
            dlq = SQLiteDLQ(tmp_path / "dlq.db")  # a store counts the deliveries
        else:
            pytest.skip(f"{harness.name} does not count deliveries")
        processor.set_dlq(dlq)
        # When one message is consumed, nacked, and delivered again
        try:
            with running(adapter):
                harness.publish([b"poison"])
                wait_until(lambda: "acked" in observer.events(), "the message is acked")
        finally:
            if isinstance(dlq, SQLiteDLQ):
                dlq.close()
        # Then its second delivery was dead-lettered without being handled, then acked
        message_id = one_message(observer)
        handled = ["message_received", "handling_started", "handling_finished", "requeued"]
        assert observer.events(message_id) == [
            *handled,
            "message_received",
            "dead_lettered",
            "acked",
        ]
        [(_, reason)] = observer.arguments("dead_lettered")
        assert "more than max_deliveries=1" in reason

    def test_worker_started_and_stopping_bracket_the_run(self, harness: Harness) -> None:
        # Given an observed adapter
        recorder = Recorder()
        adapter, observer = observed(harness, recorder.processor)
        # When it runs, handles a message and is stopped
        with running(adapter):
            assert observer.events()[:1] == ["worker_started"]
            harness.publish([b"one"])
            wait_until(lambda: "acked" in observer.events(), "the message is acked")
            assert "worker_stopping" not in observer.events()
        # Then worker_started came first and worker_stopping last, once each
        events = observer.events()
        assert events[0] == "worker_started"
        assert events[-1] == "worker_stopping"
        assert events.count("worker_started") == events.count("worker_stopping") == 1
        assert observer.arguments("worker_started") == [(adapter,)]
        assert observer.arguments("worker_stopping") == [(adapter,)]

    def test_a_dropped_connection_is_reported_lost_then_restored(self, harness: Harness) -> None:
        needs(harness, KILL_CONNECTION)
        # Given an observed adapter that handled a message
        recorder = Recorder()
        adapter, observer = observed(harness, recorder.processor)
        with running(adapter):
            harness.publish([b"before"])
            wait_until(lambda: recorder.count() == 1, "the first message is handled")
            assert not [e for e in observer.events() if e.startswith("connection_")]
            # When the server drops the connection and consumption goes on
            harness.kill_connections()
            if PERSISTENCE not in harness.capabilities:
                publish_until_handled(harness, recorder, b"probe-")
            harness.publish([b"after"])
            wait_until(lambda: b"after" in recorder.bodies, "the next message is handled")
            wait_until(
                lambda: "connection_restored" in observer.events(), "the connection is restored"
            )
        # Then the loss was reported (where, why, when it retries), then the restoration
        connection = [e for e in observer.events() if e.startswith("connection_")]
        assert connection[0] == "connection_lost"
        assert connection[-1] == "connection_restored"
        for where, error, retry_in in observer.arguments("connection_lost"):
            assert isinstance(where, str)
            assert where
            assert isinstance(error, BaseException)
            assert retry_in >= 0
        for (where,) in observer.arguments("connection_restored"):
            assert isinstance(where, str)

    def test_a_stop_settles_or_hands_back_every_message_received(self, harness: Harness) -> None:
        needs(harness, PERSISTENCE)
        # Given 50 messages waiting, and a handler that stops its adapter at the first
        bodies = [b"%d" % i for i in range(50)]
        harness.publish(bodies)
        adapters: list[missive.Adapter[Any]] = []
        recorder = Recorder(lambda m: adapters[0].stop())
        adapter, observer = observed(harness, recorder.processor)
        adapters.append(adapter)
        # When it runs until that stop
        with running(adapter):
            wait_until(lambda: adapter.stop_requested, "the adapter is asked to stop")
        # Then each message it received was acked after its handling, and any it took
        # from the broker without starting it was handed back
        for message_id in set(observer.message_ids()):
            assert observer.events(message_id)[-1] == "acked"
        acked = observer.events().count("acked")
        assert acked == recorder.count()
        assert all(count > 0 for (count,) in observer.arguments("handed_back"))
        wait_until(lambda: harness.remaining() == 50 - acked, "the rest is back on the broker")

    def test_an_observer_that_raises_changes_no_outcome(
        self, harness: Harness, caplog: pytest.LogCaptureFixture
    ) -> None:
        # Given an observer that raises in every event, registered before a recording one
        processor: missive.Processor[Any] = missive.Processor()
        handled: list[bytes] = []

        @processor.handle_for(lambda m: m.raw_data == b"ok")
        def ok(message: missive.Message, ctx: Ctx) -> None:
            handled.append(message.raw_data)
            ctx.ack()

        @processor.handle_for(lambda m: m.raw_data == b"bad")
        def bad(message: missive.Message, ctx: Ctx) -> None:
            raise KeyError("boom")

        dlq: dict[bytes, Any] = {}
        processor.set_dlq(dlq)
        adapter = harness.adapter(missive.RawMessage, processor)
        adapter.add_observer(RaisingObserver())
        observer = RecordingObserver()
        adapter.add_observer(observer)
        # When a message to ack and one that fails are consumed
        with caplog.at_level(logging.ERROR, logger="missive.events"), running(adapter):
            harness.publish([b"ok", b"bad"])
            wait_until(lambda: observer.events().count("acked") == 2, "both messages are acked")
            if PERSISTENCE in harness.capabilities:
                wait_until(lambda: harness.remaining() == 0, "the broker holds nothing")
        # Then each had its usual outcome and events; the failures were logged, ignored
        assert handled == [b"ok"]
        [(message, _)] = dlq.values()
        assert message.raw_data == b"bad"
        assert sorted(observer.events(i) for i in observer.message_ids()) == [ACKED, DEAD_LETTERED]
        logged = [r.getMessage() for r in caplog.records if r.name == "missive.events"]
        assert any("raised in message_received" in text for text in logged)
        assert any("raised in acked" in text for text in logged)

    def test_each_receive_is_reported_to_the_observers_as_a_heartbeat(
        self, harness: Harness
    ) -> None:
        # Given an adapter with a delivery loop, observed for its receives
        recorder = Recorder()
        adapter = harness.adapter(missive.RawMessage, recorder.processor)
        try:
            adapter.transport().close()
        except NotImplementedError:
            pytest.skip("this adapter has no delivery loop (it is pushed to)")
        polls = PollCounter()
        adapter.add_observer(polls)
        # When five messages are consumed, then the loop waits for more
        with running(adapter):
            harness.publish([b"p%d" % i for i in range(5)])
            wait_until(lambda: len(recorder.bodies) == 5, "the messages are handled")
            wait_until(lambda: polls.empty > 0, "a receive came back empty")
        # Then every message came through a reported receive, and idle waits are reported
        assert polls.messages == 5
        assert polls.receives > polls.empty


class PollCounter(Observer):
    """Counts the ``polled`` events: receives, empty ones and the messages they brought."""

    def __init__(self) -> None:
        self.receives = self.empty = self.messages = 0

    def polled(self, count: int) -> None:
        self.receives += 1
        self.messages += count
        self.empty += count == 0
