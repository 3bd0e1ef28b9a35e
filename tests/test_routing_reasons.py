"""The reasons routing failures are dead-lettered with: stable summaries to group by.

A summary (what ``dlq stats`` counts and what is logged) is the same for every
message that fails the same way, in every process: no positions, no addresses.
"""

from typing import Any

import pytest

import missive
from missive.matchers import Field, JSONField, Matcher

Ctx = missive.HandlingContext[Any]
Reason = missive.DeadLetterReason


def ack(message: missive.Message, ctx: Ctx) -> None:
    ctx.ack()


def orders(message: missive.Message, ctx: Ctx) -> None:
    ctx.ack()


def handler_named(name: str) -> missive.Handler[Any]:
    def handler(message: missive.Message, ctx: Ctx) -> None:
        ctx.ack()

    handler.__qualname__ = name
    return handler


def dead_letter(processor: missive.Processor[Any], message: missive.Message) -> Reason:
    """Send ``message`` through ``processor`` with a fresh DLQ; return its reason."""
    dlq: dict[bytes, tuple[missive.Message, str]] = {}
    processor.set_dlq(dlq)
    assert processor.test_client().send(message) is missive.Outcome.DEAD_LETTERED
    reason = dlq[message.message_id][1]
    assert isinstance(reason, Reason)
    return reason


def shop() -> missive.Processor[missive.JSONMessage]:
    """A processor whose one matcher, a lambda, raises KeyError without a "kind"."""
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    processor.handle_for(lambda m: m.get_json()["kind"] == "order")(orders)
    return processor


class Unreadable:
    """A matcher object with the default repr, which holds its address."""

    def __call__(self, message: missive.Message) -> bool:
        raise RuntimeError("cannot tell")


class BrokenPart(Matcher):
    """A missive matcher that raises; combined with an indexed one, it is the residual."""

    def __call__(self, message: Any) -> bool:
        raise RuntimeError("cannot tell")

    def __repr__(self) -> str:
        return "BrokenPart()"


class Exploding(Field):
    """An indexable field whose reading raises."""

    def extract(self, message: Any) -> Any:
        raise RuntimeError("cannot read")


def test_json_broken_at_different_places_has_one_summary() -> None:
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    processor.handle_for(JSONField("kind").equals("order"))(orders)

    # Given two messages missing a value, at different lines and columns
    first = dead_letter(processor, missive.JSONMessage(b'{"kind": }', b"id-1"))
    second = dead_letter(processor, missive.JSONMessage(b'{"kind": "order",\n"n": }', b"id-2"))

    # Then they group under one summary; each full reason keeps its position
    assert first.summary == "could not decode the message: invalid JSON: Expecting value"
    assert second.summary == first.summary
    assert first == "message b'id-1': invalid JSON: Expecting value at line 1 column 10"
    assert second == "message b'id-2': invalid JSON: Expecting value at line 2 column 6"


@pytest.mark.parametrize(
    "matcher",
    [JSONField("kind").equals("order"), lambda m: m.get_json().get("kind") == "order"],
    ids=["indexed", "plain"],
)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_or_infinity_is_a_decode_failure_not_a_matcher_failure(
    matcher: Any, constant: str
) -> None:
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    processor.handle_for(matcher)(orders)

    # Given a message that Python's json would accept but JSON does not
    raw = b'{"kind": "order", "total": %s}' % constant.encode()

    # When it is routed
    reason = dead_letter(processor, missive.JSONMessage(raw))

    # Then it is dead-lettered as undecodable, whatever the matcher
    assert reason.summary == (
        f"could not decode the message: invalid JSON: {constant} is not a JSON number"
    )
    assert reason.exc_type == "MessageDecodeError"


def test_an_integer_beyond_the_digit_limit_is_a_decode_failure_not_a_matcher_failure() -> None:
    raw = b'{"kind": "order", "total": ' + b"9" * 5_000 + b"}"

    reason = dead_letter(shop(), missive.JSONMessage(raw))

    assert reason.summary == (
        "could not decode the message: invalid JSON: an integer has more digits than Python "
        "converts"
    )
    assert reason.exc_type == "MessageDecodeError"


def test_a_raising_lambda_is_named_by_where_it_is_written_and_by_its_handler() -> None:
    reason = dead_letter(shop(), missive.JSONMessage(b'{"label": "x"}'))

    assert reason.summary == (
        "matcher <lambda> in tests.test_routing_reasons.shop of handler 'orders' raised KeyError"
    )
    assert reason == f"{reason.summary}: 'kind'"
    assert reason.exc_type == "KeyError"


def test_the_same_matcher_failure_in_two_processors_has_one_summary() -> None:
    # Given two processors built alike: their lambdas are two objects at two addresses
    message = missive.JSONMessage(b"{}")

    # When the same message fails in each
    first, second = dead_letter(shop(), message), dead_letter(shop(), message)

    # Then the summaries, and the full reasons, are the same
    assert first.summary == second.summary
    assert first == second
    assert "0x" not in first


def test_a_raising_function_is_named_by_its_qualified_name_and_its_handler() -> None:
    def has_kind(message: missive.JSONMessage) -> bool:
        return bool(message.get_json()["kind"])

    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    processor.handle_for(has_kind)(orders)

    reason = dead_letter(processor, missive.JSONMessage(b"{}"))

    assert reason.summary == "matcher has_kind of handler 'orders' raised KeyError"


def test_a_raising_object_is_named_by_its_class_without_its_address() -> None:
    processor: missive.Processor[missive.Message] = missive.Processor()
    processor.handle_for(Unreadable())(orders)

    reason = dead_letter(processor, missive.RawMessage(b"x"))

    assert reason.summary == (
        "matcher <tests.test_routing_reasons.Unreadable object> of handler 'orders' raised "
        "RuntimeError"
    )


def test_a_raising_part_of_an_indexed_matcher_is_named_with_its_handler() -> None:
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    processor.handle_for(JSONField("kind").equals("order") & BrokenPart())(orders)

    reason = dead_letter(processor, missive.JSONMessage(b'{"kind": "order"}'))

    assert reason.summary == "matcher BrokenPart() of handler 'orders' raised RuntimeError"


def test_a_raising_indexed_field_names_the_handlers_indexed_on_it() -> None:
    # Given five handlers indexed on one field, whose reading raises
    processor: missive.Processor[missive.Message] = missive.Processor()
    for n in range(5):
        processor.handle_for(Exploding("kind").equals(n))(handler_named(f"h{n}"))

    # When a message is routed
    reason = dead_letter(processor, missive.RawMessage(b"x"))

    # Then the reason names the field and the first of its handlers, then a count
    assert reason.summary == (
        "matcher Exploding('kind') of handlers 'h0', 'h1', 'h2' and 2 more raised RuntimeError"
    )


def test_a_matcher_that_raises_when_asked_again_is_named_with_its_handler() -> None:
    # Given a matcher that matches once, then raises, beside one that always matches
    calls: list[None] = []

    def flaky(message: missive.Message) -> bool:
        calls.append(None)
        if len(calls) > 1:
            raise RuntimeError("changed its mind")
        return True

    processor: missive.Processor[missive.Message] = missive.Processor()
    processor.handle_for(flaky)(orders)
    processor.handle_for(lambda m: True)(ack)

    # When two match and the processor asks again to name them
    reason = dead_letter(processor, missive.RawMessage(b"x"))

    # Then the matcher that raised the second time is named with its handler
    assert reason.summary == "matcher flaky of handler 'orders' raised RuntimeError"


def test_a_field_that_raises_type_error_is_a_matcher_failure_not_no_match() -> None:
    # Given a field whose reading raises TypeError (not an unhashable value)
    class Mistyped(Field):
        def extract(self, message: Any) -> Any:
            raise TypeError("not a mapping")

    processor: missive.Processor[missive.Message] = missive.Processor()
    processor.handle_for(Mistyped("kind").equals("order"))(orders)

    # When a message is routed
    reason = dead_letter(processor, missive.RawMessage(b"x"))

    # Then the field is blamed, as Router.candidates blames it
    assert reason.summary == "matcher Mistyped('kind') of handler 'orders' raised TypeError"
