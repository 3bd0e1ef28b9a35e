"""Processing and handling hooks, and the state their contexts carry."""

from typing import Any

import pytest

import missive

Ctx = missive.HandlingContext[Any]
PCtx = missive.ProcessingContext[Any]


def acking_processor(events: list[str]) -> missive.Processor[missive.Message]:
    processor = missive.Processor()

    @processor.handle_for(lambda m: True)
    def handler(message: missive.Message, ctx: Ctx) -> None:
        events.append("handler")
        ctx.ack()

    return processor


def test_hooks_run_in_order_around_processing_and_each_message() -> None:
    events: list[str] = []
    processor = acking_processor(events)
    processor.before_processing(lambda p: events.append("before_processing"))
    processor.after_processing(lambda p: events.append("after_processing"))
    processor.before_handling(lambda p, h: events.append("before_handling"))
    processor.after_handling(lambda p, h: events.append("after_handling"))

    with processor.test_client() as client:
        client.send(missive.RawMessage(b"1"))
        client.send(missive.RawMessage(b"2"))

    per_message = ["before_handling", "handler", "after_handling"]
    assert events == ["before_processing", *per_message, *per_message, "after_processing"]


def test_hook_decorators_return_the_hook_unchanged() -> None:
    processor = missive.Processor()

    def hook(p: PCtx, h: Ctx) -> None: ...

    assert processor.before_handling(hook) is hook
    assert processor.after_handling(hook) is hook


def test_state_carries_values_from_before_to_after_handling() -> None:
    processor = acking_processor([])
    took: list[float] = []

    @processor.before_handling
    def start(processing_ctx: PCtx, handling_ctx: Ctx) -> None:
        handling_ctx.state.start = 1.5

    @processor.after_handling
    def end(processing_ctx: PCtx, handling_ctx: Ctx) -> None:
        took.append(handling_ctx.state.start)

    processor.test_client().send(missive.RawMessage(b"x"))
    assert took == [1.5]


def test_processing_state_is_shared_by_every_message() -> None:
    processor = missive.Processor()

    @processor.before_processing
    def connect(processing_ctx: PCtx) -> None:
        processing_ctx.state.seen = 0

    @processor.handle_for(lambda m: True)
    def count(message: missive.Message, ctx: Ctx) -> None:
        ctx.ack()

    @processor.after_handling
    def counted(processing_ctx: PCtx, handling_ctx: Ctx) -> None:
        processing_ctx.state.seen += 1

    client = processor.test_client()
    client.send(missive.RawMessage(b"1"))
    client.send(missive.RawMessage(b"2"))
    assert client.processing_context.state.seen == 2


def test_reading_unset_state_is_an_attribute_error() -> None:
    state = missive.State()
    with pytest.raises(AttributeError, match="start_time"):
        _ = state.start_time


def test_a_before_handling_hook_that_raises_dead_letters_the_message() -> None:
    events: list[str] = []
    processor = acking_processor(events)
    dlq: dict[bytes, tuple[missive.Message, str]] = {}
    processor.set_dlq(dlq)

    @processor.before_handling
    def broken(p: PCtx, h: Ctx) -> None:
        raise RuntimeError("no database")

    message = missive.RawMessage(b"x")
    processor.test_client().send(message)
    assert events == []
    reason = dlq[message.message_id][1]
    assert reason == "before_handling hook 'broken' raised RuntimeError: no database"


def test_after_handling_hooks_run_when_the_handler_raised() -> None:
    processor = missive.Processor()
    processor.set_dlq({})
    ran: list[str] = []

    @processor.handle_for(lambda m: True)
    def explode(message: missive.Message, ctx: Ctx) -> None:
        raise ValueError("bad")

    processor.after_handling(lambda p, h: ran.append("after"))
    processor.test_client().send(missive.RawMessage(b"x"))
    assert ran == ["after"]


def test_an_after_handling_hook_that_raises_dead_letters_the_message() -> None:
    processor = acking_processor([])
    dlq: dict[bytes, tuple[missive.Message, str]] = {}
    processor.set_dlq(dlq)

    @processor.after_handling
    def broken(p: PCtx, h: Ctx) -> None:
        raise RuntimeError("metrics down")

    message = missive.RawMessage(b"x")
    client = processor.test_client()
    assert client.send(message) is missive.Outcome.DEAD_LETTERED
    assert "after_handling hook 'broken' raised RuntimeError" in dlq[message.message_id][1]


def test_a_before_processing_hook_that_raises_stops_processing() -> None:
    events: list[str] = []
    processor = acking_processor(events)

    @processor.before_processing
    def cannot_start(p: PCtx) -> None:
        raise ConnectionError("database unreachable")

    processor.after_processing(lambda p: events.append("after_processing"))
    client = processor.test_client()
    with pytest.raises(ConnectionError):
        client.send(missive.RawMessage(b"x"))
    assert events == ["after_processing"]


def test_after_processing_hooks_run_when_processing_raised() -> None:
    events: list[str] = []
    processor = acking_processor(events)
    processor.after_processing(lambda p: events.append("after_processing"))
    with pytest.raises(RuntimeError), processor.context():
        raise RuntimeError("adapter failed")
    assert events == ["after_processing"]


def test_every_after_processing_hook_runs_and_the_first_error_propagates() -> None:
    processor = missive.Processor()
    ran: list[str] = []

    @processor.after_processing
    def first(p: PCtx) -> None:
        ran.append("first")
        raise RuntimeError("first failed")

    @processor.after_processing
    def second(p: PCtx) -> None:
        ran.append("second")
        raise RuntimeError("second failed")

    with pytest.raises(RuntimeError, match="second failed"), processor.context():
        pass
    # After-hooks run in reverse registration order, so `second` ran (and failed) first.
    assert ran == ["second", "first"]


def failure_seen_by_after_handling(handler: Any) -> list[object]:
    seen: list[object] = []
    processor: missive.Processor[missive.Message] = missive.Processor()
    processor.handle_for(lambda m: True)(handler)
    processor.set_dlq({})

    @processor.after_handling
    def look(processing_ctx: PCtx, handling_ctx: Ctx) -> None:
        seen.append(handling_ctx.failure)

    processor.test_client().send(missive.RawMessage(b"x"))
    return seen


def test_an_after_handling_hook_sees_why_handling_failed() -> None:
    def handler(message: missive.Message, ctx: Ctx) -> None:
        raise ValueError("bad")

    [failure] = failure_seen_by_after_handling(handler)
    assert isinstance(failure, missive.DeadLetterReason)
    assert failure.summary == "handler 'handler' raised ValueError"
    assert failure.handler == "handler"


def test_an_after_handling_hook_sees_no_failure_on_success() -> None:
    def handler(message: missive.Message, ctx: Ctx) -> None:
        ctx.ack()

    assert failure_seen_by_after_handling(handler) == [None]


def test_an_after_handling_hook_that_raises_on_success_sets_the_failure() -> None:
    processor = acking_processor([])
    seen: list[object] = []
    processor.set_dlq({})

    @processor.after_handling
    def first(processing_ctx: PCtx, handling_ctx: Ctx) -> None:  # runs last
        seen.append(handling_ctx.failure)

    @processor.after_handling
    def second(processing_ctx: PCtx, handling_ctx: Ctx) -> None:  # runs first
        raise RuntimeError("boom")

    outcome = processor.test_client().send(missive.RawMessage(b"x"))

    assert outcome is missive.Outcome.DEAD_LETTERED
    [failure] = seen
    assert isinstance(failure, missive.DeadLetterReason)
    assert failure.summary == "after_handling hook 'second' raised RuntimeError"


def test_a_hook_sees_the_processing_context_it_is_given() -> None:
    processor = acking_processor([])
    seen: list[bool] = []
    processor.before_handling(lambda p, h: seen.append(h.processing_ctx is p))
    processor.test_client().send(missive.RawMessage(b"x"))
    assert seen == [True]
