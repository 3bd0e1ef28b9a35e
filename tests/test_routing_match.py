"""Router.match: the one routing decision, shared by processing and the CLI."""

from typing import Any

import missive
from missive.matchers import JSONField
from missive.routing import NO_HANDLER, NoRoute, Route, Router

Ctx = missive.HandlingContext[Any]


def handle_a(message: missive.Message, ctx: Ctx) -> None:
    ctx.ack()


def handle_b(message: missive.Message, ctx: Ctx) -> None:
    ctx.ack()


def router() -> Router[missive.JSONMessage]:
    routes: Router[missive.JSONMessage] = Router()
    routes.add(JSONField("label").equals("a"), handle_a)
    routes.add(lambda m: m.get_json().get("label") in ("b", "ab"), handle_b)
    routes.add(JSONField("label").equals("ab"), handle_a)
    return routes


def message(label: str) -> missive.JSONMessage:
    return missive.JSONMessage(b'{"label": "%s"}' % label.encode(), b"id-1")


def test_one_match_returns_the_route_built_at_add() -> None:
    routes = router()

    first = routes.match(message("a"))
    second = routes.match(message("a"))

    assert first == Route(handle_a, "handle_a")
    assert first is second  # nothing is built per message
    assert routes.match(message("b")) == Route(handle_b, "handle_b")


def test_no_match_is_unmatched_with_the_dlq_text() -> None:
    found = router().match(message("c"))

    assert isinstance(found, NoRoute)
    assert found.kind == "unmatched"
    assert found.reason == found.reason.summary == NO_HANDLER == "no handler matched the message"


def test_several_matches_are_ambiguous_and_named() -> None:
    found = router().match(message("ab"))

    assert isinstance(found, NoRoute)
    assert found.kind == "ambiguous"
    assert found.reason == (
        "2 handlers matched the message, exactly one must: handle_a, handle_b"
    )


def test_a_matcher_that_raises_is_an_error_naming_it_and_its_handler() -> None:
    routes: Router[missive.Message] = Router()

    def broken(message: missive.Message) -> bool:
        raise KeyError("secret")

    routes.add(broken, handle_a)
    found = routes.match(missive.RawMessage(b"x", b"id-1"))

    assert isinstance(found, NoRoute)
    assert found.kind == "error"
    assert found.reason.summary == "matcher broken of handler 'handle_a' raised KeyError"
    assert found.reason.exc_type == "KeyError"


def test_an_undecodable_message_is_an_error_with_the_decode_summary() -> None:
    found = router().match(missive.JSONMessage(b'{"label": ', b"id-1"))

    assert isinstance(found, NoRoute)
    assert found.kind == "error"
    assert found.reason.summary.startswith("could not decode the message: invalid JSON")
    assert isinstance(found.reason.exception, missive.MessageDecodeError)


def test_process_dead_letters_with_the_text_of_match() -> None:
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    processor.router = router()
    dlq: dict[bytes, Any] = {}
    processor.set_dlq(dlq)

    for label in ("c", "ab"):
        expected = processor.router.match(message(label))
        assert isinstance(expected, NoRoute)
        processor.test_client().send(message(label))
        assert dlq[b"id-1"][1] == expected.reason
