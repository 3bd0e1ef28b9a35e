"""The conformance suite every adapter must pass, written only against ``Harness``.

Public: for third-party adapters as well as Missive's own. Use it from a transport's
test module that defines a ``harness`` fixture (a
:class:`~missive.testing.conformance.Harness` bound to a fresh destination, closed
afterwards)::

    from missive.testing.conformance import AdapterSuite

    class TestConformance(AdapterSuite):
        pass

Each test publishes only once the adapter is consuming, unless it is about
persistence, so that transports without it (Redis Pub/Sub) run it too. The harness's
capability flags decide which tests apply; the others are skipped, saying why. The
delayed-retry tests live in ``retries_suite.py``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import missive
from missive.testing.conformance.harness import (
    CONSUMER_GROUPS,
    EXTERNAL_PUBLISHER,
    KILL_CONNECTION,
    PERSISTENCE,
    PRODUCT_FLAGS,
    REDELIVERY,
    Harness,
    needs,
)
from missive.testing.conformance.retries_suite import DelayedRetrySuite
from missive.testing.conformance.support import TIMEOUT, Recorder, running, wait_until

DLQ = dict[bytes, tuple[missive.Message, str]]


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


def publish_until_handled(harness: Harness, recorder: Recorder, prefix: bytes) -> None:
    """Publish probes until one is handled: the adapter is consuming again.

    For transports without persistence, where a message published while the adapter
    reconnects is missed by design. Probes are named ``prefix + number``.
    """
    deadline = time.monotonic() + TIMEOUT
    number = 0
    while not any(body.startswith(prefix) for body in recorder.bodies):
        assert time.monotonic() < deadline, "the adapter did not consume again"
        harness.publish([prefix + b"%d" % number])
        number += 1
        time.sleep(0.1)


class AdapterSuite(DelayedRetrySuite):
    """The adapter conformance tests; subclass it where a ``harness`` fixture exists.

    It holds :class:`~missive.testing.conformance.retries_suite.DelayedRetrySuite`'s
    tests too, run where the harness declares DELAYED_RETRY."""

    # -- what the transport says of itself -----------------------------------------------

    def test_the_harness_declares_what_the_transport_can_do(self, harness: Harness) -> None:
        # Given the adapter's transport, where it has one (a push adapter has none)
        adapter = harness.adapter(missive.RawMessage, Recorder().processor)
        try:
            transport = adapter.transport()
        except NotImplementedError:
            pytest.skip(f"{harness.name} has no transport to compare its flags with")
        transport.close()
        # Then the harness declares exactly the product flags the transport does
        declared = {name for name in PRODUCT_FLAGS if name in harness.capabilities}
        actual = {
            name for name, flag in PRODUCT_FLAGS.items() if flag in type(transport).capabilities
        }
        assert declared == actual, (
            f"{type(transport).__name__}.capabilities has {sorted(actual)}, the harness "
            f"declares {sorted(declared)}: the harness's capabilities must match"
        )

    # -- delivery ---------------------------------------------------------------------

    def test_a_published_message_is_delivered_once(self, harness: Harness) -> None:
        # Given a consuming adapter
        recorder = Recorder()
        with running(harness.adapter(missive.RawMessage, recorder.processor)):
            # When one message is published
            harness.publish([b"hello"])
            wait_until(lambda: recorder.count() == 1, "the message is handled")
            time.sleep(0.2)  # room for a wrong second delivery
        # Then the handler got it once, with an id
        [message] = recorder.messages
        assert message.raw_data == b"hello"
        assert message.message_id

    def test_every_byte_value_and_a_1_mib_body_round_trip_unchanged(self, harness: Harness) -> None:
        # Given bodies with every byte value 0..255 and 1 MiB of random bytes
        every_byte = bytes(range(256)) * 2
        big = os.urandom(1024 * 1024)
        recorder = Recorder()
        with running(harness.adapter(missive.RawMessage, recorder.processor)):
            # When they are published and consumed
            harness.publish([every_byte, big])
            wait_until(lambda: recorder.count() == 2, "both messages are handled")
        # Then the handler saw exactly the published bytes
        assert recorder.bodies == [every_byte, big]

    def test_processing_hooks_run_once_around_consumption(self, harness: Harness) -> None:
        # Given a processor recording its processing hooks
        recorder = Recorder()
        calls: list[str] = []
        recorder.processor.before_processing(lambda ctx: calls.append("before"))
        recorder.processor.after_processing(lambda ctx: calls.append("after"))
        # When an adapter consumes two messages and is stopped
        with running(harness.adapter(missive.RawMessage, recorder.processor)):
            harness.publish([b"1", b"2"])
            wait_until(lambda: recorder.count() == 2, "both messages are handled")
            assert calls == ["before"]
        # Then before_processing ran once at the start and after_processing once at the end
        assert calls == ["before", "after"]

    def test_5000_messages_are_each_handled_once(self, harness: Harness) -> None:
        # Given a consuming adapter
        bodies = [b"%d" % i for i in range(5000)]
        recorder = Recorder()
        with running(harness.adapter(missive.RawMessage, recorder.processor)):
            # When 5,000 messages are published
            harness.publish(bodies)
            wait_until(lambda: recorder.count() >= 5000, "5,000 messages are handled")
            time.sleep(0.2)  # room for wrong extra deliveries
        # Then each was handled exactly once, none lost
        assert recorder.count() == 5000
        assert sorted(recorder.bodies, key=int) == bodies

    def test_messages_published_before_the_adapter_starts_are_delivered(
        self, harness: Harness
    ) -> None:
        needs(harness, PERSISTENCE)
        # Given messages published while no adapter runs
        harness.publish([b"early-1", b"early-2"])
        recorder = Recorder()
        # When an adapter starts
        with running(harness.adapter(missive.RawMessage, recorder.processor)):
            wait_until(lambda: recorder.count() == 2, "both messages are handled")
        # Then it handled both
        assert sorted(recorder.bodies) == [b"early-1", b"early-2"]

    # -- ack, nack, dead letters ----------------------------------------------------------

    def test_an_acked_message_is_removed_from_the_broker(self, harness: Harness) -> None:
        needs(harness, PERSISTENCE)
        # Given three messages held by the broker
        harness.publish([b"1", b"2", b"3"])
        assert harness.remaining() == 3
        recorder = Recorder()
        # When a handler acks each of them
        with running(harness.adapter(missive.RawMessage, recorder.processor)):
            wait_until(lambda: recorder.count() == 3, "the messages are handled")
            # Then the broker holds none of them any more, ready or unacked
            wait_until(lambda: harness.remaining() == 0, "the broker holds nothing")
        assert harness.remaining() == 0

    def test_a_nacked_message_is_redelivered_with_the_same_id(self, harness: Harness) -> None:
        needs(harness, REDELIVERY)
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

        # When a message is consumed
        with running(harness.adapter(missive.RawMessage, processor)):
            harness.publish([b"again"])
            wait_until(lambda: len(seen) == 2, "the message is delivered twice")
            wait_until(lambda: harness.remaining() == 0, "the broker holds nothing")
        # Then it came back with the same id and bytes, and is gone once acked
        first, second = seen
        assert (second.message_id, second.raw_data) == (first.message_id, b"again")

    def test_a_nacked_message_is_dead_lettered_when_the_transport_cannot_redeliver(
        self, harness: Harness
    ) -> None:
        if REDELIVERY in harness.capabilities:
            pytest.skip(f"{harness.name} redelivers nacked messages")
        # Given a handler that nacks, and a DLQ
        processor: missive.Processor[missive.RawMessage] = missive.Processor()
        processor.handle_for(lambda m: True)(lambda message, ctx: ctx.nack())
        dlq: DLQ = {}
        processor.set_dlq(dlq)
        # When a message is consumed
        with running(harness.adapter(missive.RawMessage, processor)):
            harness.publish([b"nacked"])
            wait_until(lambda: dlq, "the message is dead-lettered")
        # Then it is in the DLQ, with a reason saying it cannot be redelivered
        [(message, reason)] = dlq.values()
        assert message.raw_data == b"nacked"
        assert "redeliver" in reason

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
        self,
        harness: Harness,
        make_processor: Callable[[], missive.Processor[missive.JSONMessage]],
        body: bytes,
        reason: str,
    ) -> None:
        # Given a processor with a DLQ that cannot handle the message
        processor = make_processor()
        dlq: DLQ = {}
        processor.set_dlq(dlq)
        # When it is consumed
        with running(harness.adapter(missive.JSONMessage, processor)):
            harness.publish([body])
            wait_until(lambda: dlq, "the message is dead-lettered")
            # Then it is in the DLQ under its id, with the reason, and acked on the broker
            wait_until(lambda: harness.remaining() == 0, "the message is acked")
            time.sleep(0.2)  # room for a wrong redelivery
        [(message_id, (message, stored_reason))] = dlq.items()
        assert message_id == message.message_id
        assert message.raw_data == body
        assert reason in stored_reason

    # -- shutdown and competing consumers -----------------------------------------------

    def test_a_graceful_stop_mid_stream_loses_nothing(self, harness: Harness) -> None:
        needs(harness, PERSISTENCE)
        # Given 1,000 messages and an adapter that is stopped from its 100th message on
        bodies = [b"%d" % i for i in range(1000)]
        harness.publish(bodies)
        first_adapter: list[missive.Adapter[Any]] = []

        def stop_at_100(message: missive.Message) -> None:
            if first.count() >= 99:
                first_adapter[0].stop()

        first = Recorder(stop_at_100)
        adapter = harness.adapter(missive.RawMessage, first.processor)
        first_adapter.append(adapter)
        with running(adapter):
            wait_until(lambda: adapter.stop_requested, "the first adapter is asked to stop")
        # When a second adapter instance consumes the rest
        second = Recorder()
        with running(harness.adapter(missive.RawMessage, second.processor)):
            wait_until(lambda: first.count() + second.count() >= 1000, "every message is handled")
            wait_until(lambda: harness.remaining() == 0, "the broker holds nothing")
        # Then the first stopped early, and together they handled each message exactly once
        assert 100 <= first.count() < 1000
        assert sorted(first.bodies + second.bodies, key=int) == bodies

    def test_two_competing_consumers_share_the_work_without_duplicates(
        self, harness: Harness
    ) -> None:
        needs(harness, CONSUMER_GROUPS)
        # Given two adapters on the same destination, each handler a little slow
        bodies = [b"%d" % i for i in range(2000)]
        one = Recorder(lambda m: time.sleep(0.0005))
        two = Recorder(lambda m: time.sleep(0.0005))
        with (
            running(harness.adapter(missive.RawMessage, one.processor)),
            running(harness.adapter(missive.RawMessage, two.processor)),
        ):
            # When 2,000 messages are published
            harness.publish(bodies)
            wait_until(lambda: one.count() + two.count() >= 2000, "every message is handled")
            time.sleep(0.2)  # room for wrong duplicates
        # Then both took part, and each message was handled once
        assert one.count() > 0
        assert two.count() > 0
        assert sorted(one.bodies + two.bodies, key=int) == bodies

    # -- connection loss ----------------------------------------------------------------

    def test_consumption_continues_after_the_server_drops_the_connection(
        self, harness: Harness
    ) -> None:
        needs(harness, KILL_CONNECTION)
        # Given an adapter that handled a first batch
        recorder = Recorder()
        before = [b"before-%d" % i for i in range(100)]
        after = [b"after-%d" % i for i in range(100)]
        with running(harness.adapter(missive.RawMessage, recorder.processor)):
            harness.publish(before)
            wait_until(lambda: recorder.count() >= 100, "the first batch is handled")
            # When the server drops its connection and more messages are published
            harness.kill_connections()
            if PERSISTENCE not in harness.capabilities:
                publish_until_handled(harness, recorder, b"probe-")
            harness.publish(after)
            # Then every message is handled: consumption went on, nothing was lost
            wait_until(
                lambda: set(before + after) <= set(recorder.bodies), "every message is handled"
            )

    def test_a_message_in_hand_when_the_connection_drops_is_not_lost(
        self, harness: Harness
    ) -> None:
        needs(harness, KILL_CONNECTION, REDELIVERY)
        # Given a handler that is in the middle of a message when the connection drops
        in_handler = threading.Event()
        release = threading.Event()
        seen: list[missive.Message] = []

        def hold_first(message: missive.Message) -> None:
            seen.append(message)
            if len(seen) == 1:
                in_handler.set()
                assert release.wait(TIMEOUT)

        recorder = Recorder(hold_first)
        with running(harness.adapter(missive.RawMessage, recorder.processor)):
            harness.publish([b"cut-off"])
            assert in_handler.wait(TIMEOUT)
            harness.kill_connections()
            # When the handler then acks it, and a second message follows
            release.set()
            harness.publish([b"next"])
            wait_until(lambda: b"next" in recorder.bodies, "the next message is handled")
            # Then the broker ends up holding nothing: the ack reached it on the new
            # connection (Redis Streams), or it delivered the message again (RabbitMQ)
            wait_until(lambda: harness.remaining() == 0, "the broker holds nothing")
        # and any second delivery kept the message's id and bytes
        again = [m for m in seen[1:] if m.raw_data == b"cut-off"]
        assert all(m.message_id == seen[0].message_id for m in again)

    # -- publishers that are not Python ---------------------------------------------------

    def test_a_message_from_a_non_python_publisher_is_delivered(self, harness: Harness) -> None:
        needs(harness, EXTERNAL_PUBLISHER)
        # Given a consuming adapter
        body = '{"from": "a non-Python publisher", "text": "é ü 日本"}'.encode()
        recorder = Recorder()
        with running(harness.adapter(missive.JSONMessage, recorder.processor)):
            # When a non-Python tool publishes a message
            harness.publish_external(body)
            wait_until(lambda: recorder.count() == 1, "the message is handled")
        # Then its bytes arrive intact and decode
        [message] = recorder.messages
        assert message.raw_data == body
        assert isinstance(message, missive.JSONMessage)
        assert message.get_json()["text"] == "é ü 日本"
