"""Indexed routing: matchers from missive.matchers and plain callables, exactly one handler."""

from typing import Any

import pytest

import missive
from missive.matchers import Attribute, JSONField

Ctx = missive.HandlingContext[Any]


def ack(message: missive.Message, ctx: Ctx) -> None:
    ctx.ack()


def processor_with_dlq() -> tuple[missive.Processor[missive.JSONMessage], dict[bytes, Any]]:
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    dlq: dict[bytes, Any] = {}
    processor.set_dlq(dlq)
    return processor, dlq


def handled_by(processor: missive.Processor[Any], raw: bytes, **attributes: Any) -> str | None:
    seen: list[str | None] = []
    processor.after_handling(lambda p, h: seen.append(h.handler_name))
    processor.test_client().send(missive.JSONMessage(raw, attributes=attributes))
    processor.after_handling_hooks.pop()
    return seen[0]


def test_a_thousand_indexed_handlers_each_get_their_label() -> None:
    processor, dlq = processor_with_dlq()
    for i in range(1000):

        def handler(message: missive.JSONMessage, ctx: Ctx) -> None:
            ctx.ack()

        handler.__qualname__ = f"handle_{i}"
        processor.handle_for(JSONField("label").equals(f"label-{i}"))(handler)
    assert handled_by(processor, b'{"label": "label-0"}') == "handle_0"
    assert handled_by(processor, b'{"label": "label-999"}') == "handle_999"
    assert dlq == {}


def test_indexed_and_plain_matchers_together_still_route_exactly_once() -> None:
    processor, dlq = processor_with_dlq()

    @processor.handle_for(JSONField("label").equals("a"))
    def indexed(message: missive.JSONMessage, ctx: Ctx) -> None:
        ctx.ack()

    @processor.handle_for(lambda m: m.get_json().get("urgent") is True)
    def plain(message: missive.JSONMessage, ctx: Ctx) -> None:
        ctx.ack()

    assert handled_by(processor, b'{"label": "a"}') == "indexed"
    assert handled_by(processor, b'{"label": "b", "urgent": true}') == "plain"
    message = missive.JSONMessage(b'{"label": "a", "urgent": true}')
    processor.test_client().send(message)
    reason = dlq[message.message_id][1]
    assert reason.startswith("2 handlers matched")
    assert "indexed" in reason
    assert "plain" in reason


def test_equal_indexed_matchers_are_an_error_at_registration_naming_both() -> None:
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    processor.handle_for(JSONField("label").equals("a"))(ack)

    def second(message: missive.JSONMessage, ctx: Ctx) -> None: ...

    with pytest.raises(missive.RegistrationError) as info:
        processor.handle_for(JSONField("label").is_in(["b", "a"]))(second)
    assert "'ack'" in str(info.value)
    assert "'second'" in str(info.value)
    assert "'a'" in str(info.value)


def test_overlaps_that_depend_on_the_message_are_checked_when_it_arrives() -> None:
    processor, dlq = processor_with_dlq()

    @processor.handle_for(JSONField("label").equals("a") & Attribute("queue").equals("q1"))
    def first(message: missive.JSONMessage, ctx: Ctx) -> None:
        ctx.ack()

    @processor.handle_for(JSONField("label").equals("a") & JSONField("v").equals(2))
    def second(message: missive.JSONMessage, ctx: Ctx) -> None:
        ctx.ack()

    assert handled_by(processor, b'{"label": "a"}', queue="q1") == "first"
    assert handled_by(processor, b'{"label": "a", "v": 2}', queue="q2") == "second"
    message = missive.JSONMessage(b'{"label": "a", "v": 2}', attributes={"queue": "q1"})
    processor.test_client().send(message)
    assert dlq[message.message_id][1].startswith("2 handlers matched")


def test_an_or_of_one_field_is_indexed_as_every_value() -> None:
    processor, _ = processor_with_dlq()
    processor.handle_for(JSONField("label").equals("a") | JSONField("label").equals("b"))(ack)
    assert handled_by(processor, b'{"label": "b"}') == "ack"
    assert processor.router.indexes[0][1].keys() == {"a", "b"}
    assert processor.router.plain == []


def test_a_missing_field_is_no_match() -> None:
    processor, dlq = processor_with_dlq()
    processor.handle_for(JSONField("label").equals("a"))(ack)
    message = missive.JSONMessage(b'{"other": 1}')
    processor.test_client().send(message)
    assert dlq[message.message_id][1] == "no handler matched the message"


def test_an_unhashable_field_value_is_no_match() -> None:
    processor, dlq = processor_with_dlq()
    processor.handle_for(JSONField("label").equals("a"))(ack)
    message = missive.JSONMessage(b'{"label": ["a"]}')
    processor.test_client().send(message)
    assert dlq[message.message_id][1] == "no handler matched the message"


def test_invalid_json_dead_letters_with_its_reason_through_the_index() -> None:
    processor, dlq = processor_with_dlq()
    processor.handle_for(JSONField("label").equals("a"))(ack)
    message = missive.JSONMessage(b'{"label": ', b"id-1")
    processor.test_client().send(message)
    reason = dlq[message.message_id][1]
    assert "invalid JSON" in reason
    assert "id-1" in reason


def test_candidates_lists_every_matching_handler_for_tools() -> None:
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    processor.handle_for(JSONField("label").equals("a"))(ack)

    @processor.handle_for(lambda m: True)
    def anything(message: missive.JSONMessage, ctx: Ctx) -> None: ...

    found = processor.router.candidates(missive.JSONMessage(b'{"label": "a"}'))
    assert [name for _, name in found] == ["ack", "anything"]


def test_candidates_wraps_a_raising_matcher_naming_it() -> None:
    processor: missive.Processor[missive.Message] = missive.Processor()

    def broken(message: missive.Message) -> bool:
        raise LookupError("nope")

    processor.handle_for(broken)(ack)
    with pytest.raises(missive.MatcherError) as info:
        processor.router.candidates(missive.RawMessage(b"", b"id-2"))
    assert info.value.matcher is broken
    assert isinstance(info.value.error, LookupError)
    assert "id-2" in str(info.value)


def test_candidates_names_the_handler_of_a_raising_matcher_without_an_address() -> None:
    # Given a plain matcher that raises, registered for the handler "ack"
    processor: missive.Processor[missive.Message] = missive.Processor()

    def broken(message: missive.Message) -> bool:
        raise LookupError("nope")

    processor.handle_for(broken)(ack)

    # When a tool asks for the candidates
    with pytest.raises(missive.MatcherError) as info:
        processor.router.candidates(missive.RawMessage(b"", b"id-2"))

    # Then the error names the handler, and its text says what to do, with no address
    assert info.value.handlers == ("ack",)
    assert str(info.value) == (
        "matcher broken of handler 'ack' raised LookupError for message b'id-2'; a matcher "
        "should return False for a message it does not accept"
    )


def test_candidates_names_every_handler_indexed_on_a_field_that_raises() -> None:
    class Broken(Attribute):
        def extract(self, message: Any) -> Any:
            raise LookupError("nope")

    processor: missive.Processor[missive.Message] = missive.Processor()
    processor.handle_for(Broken("queue").equals("a"))(ack)

    @processor.handle_for(Broken("queue").is_in({"b", "c"}))
    def other(message: missive.Message, ctx: Ctx) -> None: ...

    with pytest.raises(missive.MatcherError) as info:
        processor.router.candidates(missive.RawMessage(b""))

    assert info.value.matcher == Broken("queue")
    assert info.value.handlers == ("ack", "other")
