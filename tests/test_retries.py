"""Retries through the test client: immediate ones in place, delayed ones at a virtual
time (client.retried, client.advance), the history in the dead letter, ctx.retry and
ctx.nack(delay=...), per-handler policies, and what no retry can fix."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

import missive
from missive.attempts import FIRST_ATTEMPT, HISTORY, RETRIES

Ctx = missive.HandlingContext[Any]


class Failing:
    """A handler that raises ``error`` for its first ``failures`` calls, then acks."""

    def __init__(self, failures: int = 1_000_000, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError("database down; payload: card 4111")
        self.calls = 0
        self.__qualname__ = "Failing"  # the handler's name in reasons

    def __call__(self, message: missive.Message, ctx: Ctx) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        ctx.ack()


class Longest(random.Random):
    """A jitter source that always draws the cap: delays become deterministic."""

    def uniform(self, a: float, b: float) -> float:
        return b


def client_for(
    handler: Any, retry: missive.Retry = missive.NO_RETRY, **route: Any
) -> tuple[missive.TestClient[Any], dict[bytes, Any]]:
    processor: missive.Processor[Any] = missive.Processor(retry=retry)
    processor.handle_for(lambda m: True, **route)(handler)
    dlq: dict[bytes, Any] = {}
    processor.set_dlq(dlq)
    return processor.test_client(), dlq


def msg(message_id: bytes = b"m1") -> missive.RawMessage:
    return missive.RawMessage(b"{}", message_id, {"queue": "q"})


def test_by_default_a_failure_is_dead_lettered_at_once_as_before() -> None:
    handler = Failing()
    client, dlq = client_for(handler)

    assert client.send(msg()) is missive.Outcome.DEAD_LETTERED

    message, reason = dlq[b"m1"]
    assert handler.calls == 1
    assert client.retried == []
    assert dict(message.attributes) == {"queue": "q"}
    assert reason.summary == "handler 'Failing' raised ConnectionError"
    assert "attempts" not in reason


def test_immediate_retries_handle_the_message_again_at_once() -> None:
    handler = Failing(failures=2)
    client, _ = client_for(handler, missive.Retry(immediate=2))

    assert client.send(msg()) is missive.Outcome.ACKED
    assert handler.calls == 3
    assert client.retried == []


def test_immediate_retries_exhausted_dead_letter_with_each_attempt() -> None:
    handler = Failing()
    client, dlq = client_for(handler, missive.Retry(immediate=2))

    assert client.send(msg()) is missive.Outcome.DEAD_LETTERED

    message, reason = dlq[b"m1"]
    assert handler.calls == 3
    history = message.attributes[HISTORY]
    assert [entry["delay"] for entry in history] == [0.0, 0.0, None]
    assert "attempts (3):" in reason


def test_each_delivery_gets_its_immediate_retries() -> None:
    handler = Failing()
    client, _ = client_for(handler, missive.Retry(immediate=1, delayed=2))

    client.send(msg())
    client.advance(3600)

    assert handler.calls == 6  # 3 deliveries of 1 + 1 attempts


def test_delayed_retries_wait_the_capped_exponential_delays() -> None:
    handler = Failing()
    policy = missive.Retry(delayed=4, initial_delay=1, multiplier=2, max_delay=3)
    client, dlq = client_for(handler, policy)
    client.processing_context.rng = Longest()

    assert client.send(msg()) is missive.Outcome.RETRY
    client.advance(3600)

    assert [delay for _, delay in client.retried] == [1.0, 2.0, 3.0, 3.0]
    assert handler.calls == 5
    assert b"m1" in dlq


def test_a_delayed_retry_is_not_handled_before_it_is_due() -> None:
    handler = Failing(failures=1)
    client, _ = client_for(handler, missive.Retry(delayed=1, initial_delay=10))
    client.processing_context.rng = Longest()
    client.send(msg())

    assert client.advance(9.9) == []
    assert client.advance(0.1) == [missive.Outcome.ACKED]
    assert handler.calls == 2


def test_delayed_retries_draw_full_jitter_between_zero_and_the_cap() -> None:
    client, _ = client_for(Failing(), missive.Retry(delayed=1, initial_delay=8, max_delay=8))
    client.processing_context.rng = random.Random(3)

    for i in range(300):
        client.send(msg(b"%d" % i))

    delays = [delay for _, delay in client.retried]
    assert all(0.0 <= delay <= 8.0 for delay in delays)
    assert min(delays) < 0.5
    assert max(delays) > 7.5


def test_no_delayed_retry_is_scheduled_past_max_total() -> None:
    policy = missive.Retry(delayed=10, initial_delay=10, max_delay=10, max_total=25)
    client, dlq = client_for(Failing(), policy)
    client.processing_context.rng = Longest()

    client.send(msg())
    client.advance(3600)

    # Failures at 0, 10, 20 s are retried; the one at 30 s is past 25 s.
    assert len(client.retried) == 3
    assert dlq[b"m1"][0].attributes[RETRIES] == 3


def test_the_redelivered_message_carries_its_attempt_state() -> None:
    seen: list[missive.Message] = []

    def handler(message: missive.Message, ctx: Ctx) -> None:
        seen.append(message)
        raise TimeoutError("slow")

    client, _ = client_for(handler, missive.Retry(delayed=1))
    start = client.now
    client.send(msg())
    client.advance(3600)

    again = seen[1]
    assert again.message_id == b"m1"
    assert again.raw_data == b"{}"
    assert again.attributes["queue"] == "q"
    assert again.attributes[RETRIES] == 1
    assert again.attributes[FIRST_ATTEMPT] == start
    assert again.attributes[HISTORY] == [
        {
            "at": start,
            "reason": "handler 'handler' raised TimeoutError",
            "delay": client.retried[0][1],
        }
    ]


def test_the_history_never_holds_exception_text() -> None:
    client, dlq = client_for(Failing(), missive.Retry(immediate=1, delayed=1))
    client.send(msg())
    client.advance(3600)

    message, reason = dlq[b"m1"]
    history = message.attributes[HISTORY]
    assert len(history) == 4
    assert all("4111" not in entry["reason"] for entry in history)
    assert "4111" not in reason.split("\n", 1)[1]  # only the first line quotes the error
    assert reason.summary == "handler 'Failing' raised ConnectionError"


@pytest.mark.parametrize(
    "error",
    [ValueError("bad"), missive.MessageDecodeError(b"m1", "invalid JSON: Expecting value")],
)
def test_unrecoverable_failures_are_dead_lettered_at_once(error: Exception) -> None:
    handler = Failing(error=error)
    policy = missive.Retry(immediate=3, delayed=3, unrecoverable=[ValueError])
    client, dlq = client_for(handler, policy)

    assert client.send(msg()) is missive.Outcome.DEAD_LETTERED
    assert handler.calls == 1
    assert dict(dlq[b"m1"][0].attributes) == {"queue": "q"}


def test_a_message_no_handler_matches_is_never_retried() -> None:
    processor: missive.Processor[Any] = missive.Processor(retry=missive.Retry(immediate=3))
    processor.handle_for(lambda m: False)(Failing())
    processor.set_dlq(dlq := {})

    assert processor.test_client().send(msg()) is missive.Outcome.DEAD_LETTERED
    assert dlq[b"m1"][1] == "no handler matched the message"


def test_a_handler_that_settles_nothing_is_not_retried() -> None:
    calls: list[int] = []
    client, _ = client_for(lambda m, ctx: calls.append(1), missive.Retry(immediate=3))

    assert client.send(msg()) is missive.Outcome.DEAD_LETTERED
    assert calls == [1]


def test_a_handler_policy_overrides_the_processor_policy() -> None:
    processor: missive.Processor[Any] = missive.Processor(retry=missive.Retry(immediate=1))
    plain, own = Failing(), Failing()
    processor.handle_for(lambda m: m.attributes["to"] == "plain")(plain)
    processor.handle_for(lambda m: m.attributes["to"] == "own", retry=missive.Retry(immediate=4))(
        own
    )
    processor.set_dlq({})
    client = processor.test_client()

    client.send(missive.RawMessage(b"", b"a", {"to": "plain"}))
    client.send(missive.RawMessage(b"", b"b", {"to": "own"}))

    assert (plain.calls, own.calls) == (2, 5)


def test_the_processor_policy_can_be_set_after_registration() -> None:
    handler = Failing()
    client, _ = client_for(handler)
    client.processor.retry = missive.Retry(immediate=1)

    client.send(msg())
    assert handler.calls == 2


def test_a_failing_before_handling_hook_follows_the_processor_policy() -> None:
    calls: list[int] = []
    client, _ = client_for(Failing(failures=0), missive.Retry(immediate=2))

    @client.processor.before_handling
    def flaky(pctx: Any, hctx: Ctx) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("not yet")

    assert client.send(msg()) is missive.Outcome.ACKED
    assert len(calls) == 3


def test_ctx_retry_schedules_a_delayed_retry_with_the_policy_delay() -> None:
    calls: list[int] = []

    def handler(message: missive.Message, ctx: Ctx) -> None:
        calls.append(1)
        if len(calls) == 1:
            ctx.retry()
        else:
            ctx.ack()

    client, _ = client_for(handler, missive.Retry(immediate=3, delayed=1, initial_delay=2))
    client.processing_context.rng = Longest()

    assert client.send(msg()) is missive.Outcome.RETRY
    assert calls == [1]  # never retried at once
    assert client.retried[0][1] == 2.0
    assert client.advance(2) == [missive.Outcome.ACKED]
    history = client.acked[0].attributes[HISTORY]
    assert history[0]["reason"] == "handler 'handler' asked for a retry"


def test_ctx_retry_with_a_delay_uses_it() -> None:
    client, _ = client_for(lambda m, ctx: ctx.retry(delay=7), missive.Retry(delayed=1))

    client.send(msg())
    assert client.retried[0][1] == 7.0


def test_ctx_retry_under_no_retry_dead_letters() -> None:
    client, dlq = client_for(lambda m, ctx: ctx.retry(delay=7))

    assert client.send(msg()) is missive.Outcome.DEAD_LETTERED
    assert dlq[b"m1"][1].summary == "handler '<lambda>' asked for a retry"


def test_ctx_retry_and_nack_refuse_a_bad_delay_and_a_second_settlement() -> None:
    ctx: Ctx = missive.HandlingContext(msg())
    with pytest.raises(ValueError, match="delay"):
        ctx.retry(delay=-1)
    with pytest.raises(ValueError, match="delay"):
        ctx.nack(delay=float("inf"))
    ctx.retry()
    with pytest.raises(missive.AlreadySettledError):
        ctx.ack()


def test_ctx_nack_with_a_delay_is_a_nack_that_carries_it() -> None:
    processor: missive.Processor[Any] = missive.Processor(retry=missive.Retry(delayed=3))
    processor.handle_for(lambda m: True)(lambda m, ctx: ctx.nack(delay=3))
    with processor.context() as context:
        hctx = context.handling(msg())

    assert hctx.outcome is missive.Outcome.NACKED
    assert hctx.delay == 3.0
    assert hctx.retry_later is None


def test_where_nothing_can_delay_a_retry_it_is_dead_lettered_saying_so() -> None:
    handler = Failing()
    processor: missive.Processor[Any] = missive.Processor(
        retry=missive.Retry(immediate=1, delayed=3)
    )
    processor.handle_for(lambda m: True)(handler)
    processor.set_dlq(dlq := {})
    with processor.context() as context:  # as an adapter without delayed retries
        outcome = context.process(msg())

    reason = dlq[b"m1"][1]
    assert outcome is missive.Outcome.DEAD_LETTERED
    assert handler.calls == 2
    assert reason.summary == (
        "handler 'Failing' raised ConnectionError; not retried later: the adapter cannot "
        "delay a retry"
    )


def test_observers_see_every_attempt() -> None:
    events: list[str] = []

    class Recorder(missive.events.Observer):
        def handling_started(self, pctx: Any, hctx: Any) -> None:
            events.append("started")

        def dead_lettered(self, message: Any, reason: Any) -> None:
            events.append("dead_lettered")

    client, _ = client_for(Failing(), missive.Retry(immediate=2))
    client.processor.add_observer(Recorder())
    client.send(msg())

    assert events == ["started", "started", "started", "dead_lettered"]


def test_retry_must_be_a_retry_policy() -> None:
    with pytest.raises(TypeError, match=r"missive\.Retry"):
        missive.Processor(retry=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"missive\.Retry"):
        missive.Processor().handle_for(lambda m: True, retry={"immediate": 1})  # type: ignore[arg-type]


def test_async_handlers_are_retried_at_once_and_later() -> None:
    calls: list[int] = []

    async def handler(message: missive.Message, ctx: Ctx) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        ctx.ack()

    client, _ = client_for(handler, missive.Retry(immediate=1, delayed=1))

    async def scenario() -> None:
        assert await client.asend(msg()) is missive.Outcome.RETRY
        assert len(calls) == 2
        assert await client.aadvance(3600) == [missive.Outcome.ACKED]

    asyncio.run(scenario())
    assert len(calls) == 3


def test_an_async_handler_sent_synchronously_is_retried_too() -> None:
    calls: list[int] = []

    async def handler(message: missive.Message, ctx: Ctx) -> None:
        calls.append(1)
        if len(calls) < 2:
            raise ConnectionError("down")
        ctx.ack()

    client, _ = client_for(handler, missive.Retry(delayed=1))

    assert client.send(msg()) is missive.Outcome.RETRY
    assert client.advance(3600) == [missive.Outcome.ACKED]


def test_advance_refuses_to_go_back_in_time() -> None:
    client, _ = client_for(Failing())
    with pytest.raises(ValueError, match="forward"):
        client.advance(-1)
