"""Routing: every message goes to exactly one handler, or to the DLQ with a reason."""

from typing import Any

import pytest

import missive

Ctx = missive.HandlingContext[Any]


def json_processor() -> missive.Processor[missive.JSONMessage]:
    return missive.Processor()


def label_is(label: str) -> Any:
    return lambda message: message.get_json().get("label") == label


def test_handle_for_returns_the_handler_unchanged() -> None:
    processor = missive.Processor()

    def handler(message: missive.Message, ctx: Ctx) -> None:
        ctx.ack()

    assert processor.handle_for(lambda m: True)(handler) is handler


def test_a_message_goes_to_the_one_matching_handler() -> None:
    processor = json_processor()
    seen: list[str] = []

    @processor.handle_for(label_is("a"))
    def handle_a(message: missive.JSONMessage, ctx: Ctx) -> None:
        seen.append("a")
        ctx.ack()

    @processor.handle_for(label_is("b"))
    def handle_b(message: missive.JSONMessage, ctx: Ctx) -> None:
        seen.append("b")
        ctx.ack()

    client = processor.test_client()
    assert client.send(missive.JSONMessage(b'{"label": "b"}')) is missive.Outcome.ACKED
    assert seen == ["b"]


def test_a_matcher_can_be_a_class_with_call() -> None:
    class HasLabel:
        def __init__(self, label: str) -> None:
            self.label = label

        def __call__(self, message: missive.JSONMessage) -> bool:
            return bool(message.get_json().get("label") == self.label)

    processor = json_processor()

    @processor.handle_for(HasLabel("sign-in"))
    def record(message: missive.JSONMessage, ctx: Ctx) -> None:
        ctx.ack()

    message = missive.JSONMessage(b'{"label": "sign-in"}')
    client = processor.test_client()
    client.send(message)
    assert client.acked == [message]


def test_a_non_callable_matcher_is_a_type_error_at_registration() -> None:
    processor = missive.Processor()
    with pytest.raises(TypeError, match="matcher must be callable"):
        processor.handle_for(...)  # type: ignore[arg-type]


def test_the_same_matcher_twice_is_an_error_naming_both_handlers() -> None:
    processor = missive.Processor()

    def matcher(message: missive.Message) -> bool:
        return True

    @processor.handle_for(matcher)
    def first(message: missive.Message, ctx: Ctx) -> None: ...

    with pytest.raises(missive.RegistrationError) as info:

        @processor.handle_for(matcher)
        def second(message: missive.Message, ctx: Ctx) -> None: ...

    assert "first" in str(info.value)
    assert "second" in str(info.value)


@pytest.fixture
def dlq() -> dict[bytes, tuple[missive.Message, str]]:
    return {}


def reason_for(dlq: dict[bytes, tuple[missive.Message, str]], message: missive.Message) -> str:
    stored, reason = dlq[message.message_id]
    assert stored is message
    return reason


def test_no_match_is_dead_lettered_and_acked_on_the_transport(dlq: Any) -> None:
    processor = json_processor()
    processor.set_dlq(dlq)

    @processor.handle_for(label_is("a"))
    def handle_a(message: missive.JSONMessage, ctx: Ctx) -> None:
        ctx.ack()

    message = missive.JSONMessage(b'{"label": "zzz"}')
    client = processor.test_client()
    assert client.send(message) is missive.Outcome.DEAD_LETTERED
    assert client.dead_lettered == [message]
    assert client.acked == []
    assert reason_for(dlq, message) == "no handler matched the message"


def test_several_matches_are_dead_lettered_naming_every_handler(dlq: Any) -> None:
    processor = missive.Processor()
    processor.set_dlq(dlq)

    @processor.handle_for(lambda m: True)
    def greedy(message: missive.Message, ctx: Ctx) -> None:
        ctx.ack()

    @processor.handle_for(lambda m: True)
    def also_greedy(message: missive.Message, ctx: Ctx) -> None:
        ctx.ack()

    message = missive.RawMessage(b"x")
    processor.test_client().send(message)
    reason = reason_for(dlq, message)
    assert reason.startswith("2 handlers matched")
    assert "greedy" in reason
    assert "also_greedy" in reason


def test_the_spec_matcher_that_raises_is_dead_lettered_not_a_crash(dlq: Any) -> None:
    # The spec's HasLabelMatcher, as printed, says `label` where it means `self.label`.
    class HasLabelMatcher:
        def __init__(self, label: str) -> None:
            self.label = label

        def __call__(self, json_message: missive.JSONMessage) -> bool:
            return json_message.get_json().get("label") == label  # type: ignore[name-defined, no-any-return]  # noqa: F821

    processor = json_processor()
    processor.set_dlq(dlq)

    @processor.handle_for(HasLabelMatcher("sign-in"))
    def record_sign_ins(message: missive.JSONMessage, ctx: Ctx) -> None:
        ctx.ack()

    message = missive.JSONMessage(b'{"label": "sign-in"}')
    assert processor.test_client().send(message) is missive.Outcome.DEAD_LETTERED
    reason = reason_for(dlq, message)
    assert "matcher" in reason
    assert "NameError" in reason
    assert reason.exc_type == "NameError"  # type: ignore[attr-defined]


def test_invalid_json_is_dead_lettered_with_the_decode_problem(dlq: Any) -> None:
    processor = json_processor()
    processor.set_dlq(dlq)

    @processor.handle_for(label_is("a"))
    def handle_a(message: missive.JSONMessage, ctx: Ctx) -> None:
        ctx.ack()

    message = missive.JSONMessage(b'{"label": ', b"id-1")
    processor.test_client().send(message)
    reason = reason_for(dlq, message)
    assert "invalid JSON" in reason
    assert "id-1" in reason


def test_a_handler_that_raises_is_dead_lettered_with_type_text_and_name(dlq: Any) -> None:
    processor = missive.Processor()
    processor.set_dlq(dlq)

    @processor.handle_for(lambda m: True)
    def explode(message: missive.Message, ctx: Ctx) -> None:
        raise KeyError("customer")

    message = missive.RawMessage(b"x")
    processor.test_client().send(message)
    reason = reason_for(dlq, message)
    assert reason == "handler 'explode' raised KeyError: 'customer'"
    assert reason.handler == "explode"  # type: ignore[attr-defined]
    assert "Traceback" in reason.traceback  # type: ignore[attr-defined]
    assert reason.summary == "handler 'explode' raised KeyError"  # type: ignore[attr-defined]


def test_a_handler_that_settles_nothing_is_dead_lettered(dlq: Any) -> None:
    processor = missive.Processor()
    processor.set_dlq(dlq)

    @processor.handle_for(lambda m: True)
    def forgetful(message: missive.Message, ctx: Ctx) -> None:
        pass

    message = missive.RawMessage(b"x")
    processor.test_client().send(message)
    assert reason_for(dlq, message) == (
        "handler 'forgetful' returned without acking or nacking the message"
    )


def test_without_a_dlq_a_failure_raises_naming_the_id_and_is_not_acked() -> None:
    processor = missive.Processor()

    @processor.handle_for(lambda m: m.raw_data == b"a")
    def handle_a(message: missive.Message, ctx: Ctx) -> None:
        ctx.ack()

    client = processor.test_client()
    message = missive.RawMessage(b"b", b"id-42")
    with pytest.raises(missive.HandlingError) as info:
        client.send(message)
    assert info.value.message_id == b"id-42"
    assert "id-42" in str(info.value)
    assert "no handler matched" in str(info.value)
    assert message not in client.acked
    assert client.dead_lettered == []


def test_a_failing_dlq_write_raises_and_the_message_is_not_acked() -> None:
    class BrokenDLQ(dict[bytes, tuple[missive.Message, str]]):
        def __setitem__(self, key: bytes, value: tuple[missive.Message, str]) -> None:
            raise OSError("disk full")

    processor = missive.Processor()
    processor.set_dlq(BrokenDLQ())
    client = processor.test_client()
    message = missive.RawMessage(b"x", b"id-5")
    with pytest.raises(missive.DLQWriteError) as info:
        client.send(message)
    assert "id-5" in str(info.value)
    assert "disk full" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert client.acked == client.dead_lettered == []


def test_keyboard_interrupt_in_a_handler_is_not_swallowed(dlq: Any) -> None:
    processor = missive.Processor()
    processor.set_dlq(dlq)

    @processor.handle_for(lambda m: True)
    def interrupted(message: missive.Message, ctx: Ctx) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        processor.test_client().send(missive.RawMessage(b"x"))
    assert dlq == {}


def test_a_handling_error_s_text_is_safe_to_log_and_chains_the_original() -> None:
    processor = missive.Processor()

    @processor.handle_for(lambda m: True)
    def charge(message: missive.Message, ctx: Ctx) -> None:
        raise ValueError("card 4111111111111111 declined")

    with pytest.raises(missive.HandlingError) as info:
        processor.test_client().send(missive.RawMessage(b"x", b"id-8"))
    assert "handler 'charge' raised ValueError" in str(info.value)
    assert "4111" not in str(info.value)
    assert "4111" in info.value.reason
    assert isinstance(info.value.__cause__, ValueError)
