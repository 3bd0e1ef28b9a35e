"""Acking and nacking from a handler."""

import json
from typing import Any

import pytest

import missive

Ctx = missive.HandlingContext[Any]


def processor_with(handler: Any) -> missive.Processor[missive.Message]:
    processor = missive.Processor()
    processor.handle_for(lambda m: True)(handler)
    return processor


def test_an_acked_message_is_listed_as_acked() -> None:
    client = processor_with(lambda m, ctx: ctx.ack()).test_client()
    message = missive.RawMessage(b"x")
    assert client.send(message) is missive.Outcome.ACKED
    assert client.acked == [message]
    assert client.nacked == client.dead_lettered == []


def test_a_nacked_message_is_listed_as_nacked() -> None:
    client = processor_with(lambda m, ctx: ctx.nack()).test_client()
    message = missive.RawMessage(b"x")
    assert client.send(message) is missive.Outcome.NACKED
    assert client.nacked == [message]
    assert client.acked == []


@pytest.mark.parametrize(("first", "second"), [("ack", "ack"), ("ack", "nack"), ("nack", "ack")])
def test_settling_twice_is_a_clear_error(first: str, second: str) -> None:
    errors: list[Exception] = []

    def handler(message: missive.Message, ctx: Ctx) -> None:
        getattr(ctx, first)()
        try:
            getattr(ctx, second)()
        except missive.AlreadySettledError as exc:
            errors.append(exc)

    processor_with(handler).test_client().send(missive.RawMessage(b"x", b"id-3"))
    assert len(errors) == 1
    assert "id-3" in str(errors[0])
    assert "already" in str(errors[0])


def test_settling_twice_uncaught_dead_letters_the_message() -> None:
    def handler(message: missive.Message, ctx: Ctx) -> None:
        ctx.ack()
        ctx.ack()

    processor = processor_with(handler)
    processor.set_dlq({})
    client = processor.test_client()
    assert client.send(missive.RawMessage(b"x")) is missive.Outcome.DEAD_LETTERED


def test_the_handling_context_knows_the_message_and_handler() -> None:
    seen: list[tuple[missive.Message, str | None]] = []

    def handler(message: missive.Message, ctx: Ctx) -> None:
        seen.append((ctx.message, ctx.handler_name))
        ctx.ack()

    message = missive.RawMessage(b"x")
    processor_with(handler).test_client().send(message)
    assert seen == [(message, "handler")]


def test_a_handler_reads_the_run_state_through_its_processing_context() -> None:
    seen: list[object] = []

    def handler(message: missive.Message, ctx: Ctx) -> None:
        assert ctx.processing_ctx is not None
        seen.append(ctx.processing_ctx.state.database)
        ctx.ack()

    processor = processor_with(handler)

    @processor.before_processing
    def connect(processing_ctx: missive.ProcessingContext[Any]) -> None:
        processing_ctx.state.database = "connected"

    client = processor.test_client()
    client.send(missive.RawMessage(b"x"))
    assert seen == ["connected"]
    assert client.processing_context.state.database == "connected"


def test_a_handling_context_built_by_hand_has_no_processing_context_nor_failure() -> None:
    ctx: Ctx = missive.HandlingContext(missive.RawMessage(b"x"))
    assert ctx.processing_ctx is None
    assert ctx.failure is None


def _chained() -> BaseException:
    def fetch(data: dict[str, int]) -> int:
        return data["missing"] + 1

    try:
        try:
            fetch({"a": 1})
        except KeyError as exc:
            raise ValueError("wrapped") from exc
    except ValueError:
        try:
            raise ZeroDivisionError("while handling")
        except ZeroDivisionError as exc:
            exc.add_note("a note")
            return exc
    raise AssertionError("unreachable")


def test_a_reason_s_traceback_is_the_standard_one_without_column_markers() -> None:
    # Given an exception with a cause, a context and a note, raised from this file
    import re
    import traceback

    exc = _chained()
    # When a reason formats its traceback
    text = missive.DeadLetterReason.from_exception("handler 'h'", exc).traceback
    # Then it is what the standard library prints, less the ~~~^^^ lines
    full = "".join(traceback.format_exception(exc))
    markers = [line for line in full.splitlines() if re.fullmatch(r"\s*[~^]+\s*", line)]
    assert markers, "the standard text has column markers here"
    assert text == "".join(line + "\n" for line in full.splitlines() if line not in markers)


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("a bad deploy"),
        ValueError(),
        KeyError("sku"),
        OSError(2, "No such file"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        json.JSONDecodeError("Expecting value", "x", 0),
        _UnprintableError(),
    ],
    ids=lambda exc: type(exc).__name__ + ("-empty" if not exc.args else ""),
)
def test_a_reason_s_last_line_is_the_standard_one(exc: Exception) -> None:
    # Given an exception of a builtin type, of a module's or whose str() fails
    import traceback

    from missive.reason import format_traceback

    # When its traceback is formatted (no frames: it was never raised)
    text = format_traceback(exc)
    # Then it is what the standard library prints
    assert text == "".join(traceback.format_exception_only(exc))
