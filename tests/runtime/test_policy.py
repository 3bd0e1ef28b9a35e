"""Policy: the verdict for each outcome, counting attempts in the DLQ, nack delays."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import missive
from missive.dlq.sqlite import SQLiteDLQ
from missive.runtime import Capability, Policy, Verdict
from missive.runtime.policy import Requeue
from tests.runtime.fake import ScriptedTransport


class Counting(ScriptedTransport):
    capabilities: ClassVar[Capability] = Capability.REDELIVERY | Capability.COUNT_IN_DLQ


def processor(outcomes: list[str]) -> missive.Processor[missive.RawMessage]:
    p: missive.Processor[missive.RawMessage] = missive.Processor()

    @p.handle_for(lambda m: True)
    def handle(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        outcomes.append(message.raw_data.decode())
        if message.raw_data == b"nack":
            ctx.nack()
        else:
            ctx.ack()

    return p


def test_redeliveries_are_counted_in_the_dlq_until_settled(tmp_path: Path) -> None:
    handled: list[str] = []
    proc = processor(handled)
    with SQLiteDLQ(str(tmp_path / "dlq.db")) as dlq:
        proc.set_dlq(dlq)
        with proc.context() as context:
            policy = Policy(context, Counting([]), max_deliveries=3)
            message = missive.RawMessage(b"nack", b"m-1")
            # the first delivery (count 1, not counted), then three redeliveries
            verdicts = [policy.handle(message, 1, None, True)]
            verdicts += [policy.handle(message, None, None, True) for _ in range(3)]
        assert verdicts[:2] == [Verdict.REQUEUE, Verdict.REQUEUE]
        # attempts 2 and 3 are handled; the 4th is over the limit
        assert verdicts[3] is Verdict.DEAD_LETTERED
        assert "delivered 4 times, more than max_deliveries=3" in dlq.record(b"m-1").reason
        assert handled == ["nack", "nack", "nack"]


def test_an_id_the_transport_did_not_give_is_not_counted(tmp_path: Path) -> None:
    proc = processor([])
    with SQLiteDLQ(str(tmp_path / "dlq.db")) as dlq:
        proc.set_dlq(dlq)
        with proc.context() as context:
            policy = Policy(context, Counting([]), max_deliveries=1)
            message = missive.RawMessage(b"nack", b"generated")
            assert [policy.handle(message, None, None, False) for _ in range(3)] == [
                Verdict.REQUEUE
            ] * 3


def test_an_ack_forgets_the_count(tmp_path: Path) -> None:
    proc = processor([])
    with SQLiteDLQ(str(tmp_path / "dlq.db")) as dlq:
        proc.set_dlq(dlq)
        with proc.context() as context:
            policy = Policy(context, Counting([]), max_deliveries=2)
            for _ in range(5):
                assert policy.handle(missive.RawMessage(b"ok", b"m-2"), None, None, True) is (
                    Verdict.ACK
                )


def test_errors_are_returned_and_on_failure_follows_the_capabilities() -> None:
    proc = processor([])
    proc.router = missive.Processor[missive.RawMessage]().router  # no handler at all
    with proc.context() as context:
        policy = Policy(context, ScriptedTransport([]), None)
        result = policy.handle(missive.RawMessage(b"x", b"id"), 1, None, True)
    assert isinstance(result, missive.HandlingError)
    assert policy.on_failure is Verdict.RETRY


def test_nack_delays_grow_only_where_the_transport_delays() -> None:
    class Delaying(ScriptedTransport):
        capabilities: ClassVar[Capability] = Capability.REDELIVERY | Capability.DELAYED_REQUEUE

    with processor([]).context() as context:
        plain = Policy(context, ScriptedTransport([]), None, retry_delay=1.0)
        delaying = Policy(context, Delaying([]), None, retry_delay=1.0)
    assert plain.nack_delay(5) == 0.0
    assert [delaying.nack_delay(c) for c in (1, None, 3, 50)] == [1.0, 2.0, 4.0, 30.0]


def test_a_nack_counted_in_the_dlq_is_requeued_after_the_counted_attempts(
    tmp_path: Path,
) -> None:
    class CountingDelaying(ScriptedTransport):
        capabilities: ClassVar[Capability] = (
            Capability.REDELIVERY | Capability.COUNT_IN_DLQ | Capability.DELAYED_REQUEUE
        )

    proc = processor([])
    with SQLiteDLQ(str(tmp_path / "dlq.db")) as dlq:
        proc.set_dlq(dlq)
        with proc.context() as context:
            policy = Policy(context, CountingDelaying([]), None, retry_delay=0.5)
            message = missive.RawMessage(b"nack", b"m-3")
            first = policy.handle(message, 1, None, True)
            later = [policy.handle(message, None, None, True) for _ in range(3)]
    # the first delivery is not counted: the loop applies nack_delay(1) to it
    assert first is Verdict.REQUEUE
    # the redeliveries' count is unknown to the transport but counted in the DLQ
    assert [v.delay for v in later if isinstance(v, Requeue)] == [1.0, 2.0, 4.0]


def test_the_transport_hears_of_each_counted_redelivery(tmp_path: Path) -> None:
    class Listening(Counting):
        def __init__(self) -> None:
            super().__init__([])
            self.heard: list[tuple[bytes, bool, int]] = []

        def count_key(self, message: missive.Message, stable_id: bool) -> bytes | None:
            return b"by-content"  # counts ids it did not give, too

        def counted(self, message: missive.Message, stable_id: bool, attempts: int) -> None:
            self.heard.append((message.message_id, stable_id, attempts))

    proc = processor([])
    transport = Listening()
    with SQLiteDLQ(str(tmp_path / "dlq.db")) as dlq:
        proc.set_dlq(dlq)
        with proc.context() as context:
            policy = Policy(context, transport, None)
            message = missive.RawMessage(b"nack", b"generated")
            for count in (1, None, None):
                policy.handle(message, count, None, False)
    # the first delivery is not counted; each redelivery is, once
    assert transport.heard == [(b"generated", False, 2), (b"generated", False, 3)]
