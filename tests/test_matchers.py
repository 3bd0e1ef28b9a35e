"""missive.matchers: readable, composable matchers that the processor can index."""

from typing import Any

import pytest

import missive
from missive.matchers import MISSING, Attribute, Header, JSONField, RawPrefix


def json_message(raw: bytes, **attributes: Any) -> missive.JSONMessage:
    return missive.JSONMessage(raw, attributes=attributes)


def test_json_field_equals() -> None:
    matcher = JSONField("label").equals("sign-in")
    assert matcher(json_message(b'{"label": "sign-in"}'))
    assert not matcher(json_message(b'{"label": "sign-out"}'))


def test_json_field_by_path_through_objects_and_lists() -> None:
    matcher = JSONField("user", "roles", 0).equals("admin")
    assert matcher(json_message(b'{"user": {"roles": ["admin", "dev"]}}'))
    assert not matcher(json_message(b'{"user": {"roles": ["dev"]}}'))


@pytest.mark.parametrize(
    "raw",
    [b"{}", b'{"user": null}', b'{"user": "text"}', b"[1, 2]", b'{"user": {"roles": []}}'],
)
def test_a_missing_field_is_no_match_not_an_error(raw: bytes) -> None:
    field = JSONField("user", "roles", 0)
    assert field.extract(json_message(raw)) is MISSING
    assert not field.equals("admin")(json_message(raw))


def test_invalid_json_still_raises_its_decode_error() -> None:
    with pytest.raises(missive.MessageDecodeError):
        JSONField("label").equals("x")(json_message(b"{"))


def test_is_in_matches_any_of_the_values() -> None:
    matcher = JSONField("plan").is_in(["pro", "team"])
    assert matcher(json_message(b'{"plan": "team"}'))
    assert not matcher(json_message(b'{"plan": "free"}'))


def test_an_unhashable_value_is_in_no_set() -> None:
    assert not JSONField("plan").is_in(["pro"])(json_message(b'{"plan": ["pro"]}'))


def test_attribute_and_header_matchers() -> None:
    message = missive.RawMessage(b"", attributes={"queue": "orders", "headers": {"type": "new"}})
    assert Attribute("queue").equals("orders")(message)
    assert not Attribute("queue").equals("refunds")(message)
    assert Header("type").equals("new")(message)
    assert not Header("missing").equals("new")(message)
    assert not Header("type").equals("new")(missive.RawMessage(b""))


def test_raw_prefix() -> None:
    assert RawPrefix(b"PING")(missive.RawMessage(b"PING 1"))
    assert not RawPrefix(b"PING")(missive.RawMessage(b"PONG"))


def test_and_or_not_combine() -> None:
    is_sign_in = JSONField("label").equals("sign-in")
    is_admin = JSONField("role").equals("admin")
    both = is_sign_in & is_admin
    either = is_sign_in | is_admin
    neither = ~either
    admin_sign_in = json_message(b'{"label": "sign-in", "role": "admin"}')
    user_sign_in = json_message(b'{"label": "sign-in", "role": "user"}')
    other = json_message(b'{"label": "x"}')
    assert [both(m) for m in (admin_sign_in, user_sign_in, other)] == [True, False, False]
    assert [either(m) for m in (admin_sign_in, user_sign_in, other)] == [True, True, False]
    assert [neither(m) for m in (admin_sign_in, user_sign_in, other)] == [False, False, True]


def test_reprs_read_like_the_code_that_built_them() -> None:
    matcher = (JSONField("label").equals("a") & ~RawPrefix(b"#")) | Attribute("queue").is_in(
        ["q2", "q1"]
    )
    assert repr(matcher) == (
        "(JSONField('label').equals('a') & ~RawPrefix(b'#'))"
        " | Attribute('queue').is_in(['q1', 'q2'])"
    )


def test_combining_with_a_plain_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="can only combine missive matchers"):
        JSONField("a").equals(1) & (lambda m: True)  # type: ignore[operator]


def test_a_field_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        JSONField()


def test_fields_reading_the_same_thing_are_equal() -> None:
    assert JSONField("a", "b") == JSONField("a", "b")
    assert hash(JSONField("a")) == hash(JSONField("a"))
    assert JSONField("a") != Attribute("a")
