import json
import sys

import pytest

import missive
from missive.message import message_class_named


def test_raw_data_is_kept_as_bytes() -> None:
    message = missive.RawMessage(bytearray(b"\x00\xff"))
    assert message.raw_data == b"\x00\xff"
    assert type(message.raw_data) is bytes


def test_raw_data_must_be_bytes_like() -> None:
    with pytest.raises(TypeError, match="raw_data must be bytes"):
        missive.RawMessage("text")  # type: ignore[arg-type]


def test_message_id_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="message_id must be bytes"):
        missive.RawMessage(b"x", "id")  # type: ignore[arg-type]


def test_generated_ids_are_unique_bytes() -> None:
    ids = {missive.RawMessage(b"x").message_id for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(type(message_id) is bytes for message_id in ids)


def test_transport_id_is_kept() -> None:
    assert missive.RawMessage(b"x", b"1700000000-0").message_id == b"1700000000-0"


def test_equality_and_hash_follow_the_id() -> None:
    first = missive.RawMessage(b"one", b"id-1")
    redelivered = missive.RawMessage(b"one", b"id-1")
    other = missive.RawMessage(b"one", b"id-2")
    assert first == redelivered
    assert hash(first) == hash(redelivered)
    assert first != other
    assert len({first, redelivered, other}) == 2


def test_repr_shows_class_id_and_size_never_the_payload() -> None:
    message = missive.JSONMessage(b'{"card": "4111111111111111"}', b"id-7")
    text = repr(message)
    assert text == "<JSONMessage id=b'id-7' size=28>"
    assert "4111" not in text


def test_attributes_default_to_an_empty_read_only_mapping() -> None:
    message = missive.RawMessage(b"x")
    assert dict(message.attributes) == {}
    with pytest.raises(TypeError):
        message.attributes["queue"] = "q"  # type: ignore[index]


def test_attributes_are_a_read_only_copy() -> None:
    given = {"queue": "orders", "headers": {"h": "1"}}
    message = missive.RawMessage(b"x", attributes=given)
    given["queue"] = "changed"
    assert message.attributes["queue"] == "orders"
    with pytest.raises(TypeError):
        message.attributes["queue"] = "other"  # type: ignore[index]


def test_get_json_decodes_once_and_caches() -> None:
    message = missive.JSONMessage(json.dumps({"label": "sign-in"}).encode())
    first = message.get_json()
    assert first == {"label": "sign-in"}
    assert message.get_json() is first


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"\xff\xfe{}", "invalid UTF-8"),
        (b'{"label": ', "invalid JSON"),
        (b"", "invalid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
    ],
    ids=["bad-utf8", "truncated", "empty", "deeply-nested"],
)
def test_undecodable_json_is_a_missive_value_error_naming_the_id(raw: bytes, problem: str) -> None:
    message = missive.JSONMessage(raw, b"id-9")
    with pytest.raises(missive.MessageDecodeError) as info:
        message.get_json()
    assert isinstance(info.value, ValueError)
    assert info.value.message_id == b"id-9"
    assert "id-9" in str(info.value)
    assert problem in str(info.value)


def test_a_failed_decode_fails_the_same_way_again() -> None:
    message = missive.JSONMessage(b"{", b"id-1")
    with pytest.raises(missive.MessageDecodeError) as first:
        message.get_json()
    with pytest.raises(missive.MessageDecodeError) as second:
        message.get_json()
    assert str(first.value) == str(second.value)


def test_decode_errors_do_not_quote_the_payload() -> None:
    message = missive.JSONMessage(b'{"secret": "hunter2"', b"id-1")
    with pytest.raises(missive.MessageDecodeError) as info:
        message.get_json()
    assert "hunter2" not in str(info.value)


def test_a_custom_message_class_is_a_small_subclass() -> None:
    class CSVMessage(missive.Message):
        def rows(self) -> list[list[str]]:
            return [line.split(",") for line in self.raw_data.decode().splitlines()]

    message = CSVMessage(b"a,b\nc,d")
    assert message.rows() == [["a", "b"], ["c", "d"]]
    assert message_class_named(message.class_name) is CSVMessage


def test_class_lookup_never_imports() -> None:
    assert message_class_named("os.system") is None
    assert message_class_named("missive.message.JSONMessage") is missive.JSONMessage



def decode_error(raw: bytes, message_id: bytes = b"id-1") -> missive.MessageDecodeError:
    with pytest.raises(missive.MessageDecodeError) as info:
        missive.JSONMessage(raw, message_id).get_json()
    return info.value


@pytest.mark.parametrize(
    ("early", "late"),
    [
        (b"[,]", b'{"a": [1, 2, 3], \n "b": ,}'),
        (b'{"a" 1}', b'[{"a": 1}, {"b" 2}]'),
        (b'"open', b'{"note": "open'),
        (b"\xff{}", b'{"a": "\xff"}'),
    ],
    ids=["expecting-value", "expecting-colon", "unterminated-string", "bad-utf8"],
)
def test_a_decode_problem_is_the_same_wherever_in_the_bytes_it_is(
    early: bytes, late: bytes
) -> None:
    # Given two messages broken the same way at different places
    # When each is decoded
    first, second = decode_error(early), decode_error(late)

    # Then the problem is the same text, and where it is stays in the detail
    assert first.problem == second.problem
    assert first.detail != second.detail
    assert first.detail is not None
    assert first.detail in str(first)
    assert " at " not in first.problem


def test_a_decode_problem_does_not_end_in_a_dangling_at() -> None:
    error = decode_error(b'{"note": "open')

    assert error.problem == "invalid JSON: Unterminated string starting"
    assert str(error) == (
        "message b'id-1': invalid JSON: Unterminated string starting at line 1 column 10"
    )


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("template", ["{}", '{{"amount": {}}}', "[1, {}]"])
def test_nan_and_infinity_are_not_json(constant: str, template: str) -> None:
    # Given a document that Python's json accepts but JSON does not
    raw = template.format(constant).encode()

    # When it is decoded, then it is a decode error naming the constant
    error = decode_error(raw)
    assert error.problem == f"invalid JSON: {constant} is not a JSON number"
    assert str(error) == f"message b'id-1': invalid JSON: {constant} is not a JSON number"


def test_an_integer_beyond_the_digit_limit_is_a_decode_error() -> None:
    # Given an integer one digit longer than Python converts from text
    digits = sys.get_int_max_str_digits() + 1
    raw = b'{"n": ' + b"7" * digits + b"}"

    # When it is decoded
    error = decode_error(raw)

    # Then it is a decode error, stable in its problem, with the limit in the detail
    assert error.problem == "invalid JSON: an integer has more digits than Python converts"
    assert error.detail is not None
    assert str(sys.get_int_max_str_digits()) in error.detail
    assert "777" not in str(error)


def test_nan_in_a_string_or_a_key_is_ordinary_json() -> None:
    message = missive.JSONMessage(b'{"NaN": "Infinity", "n": 1.5e3}')

    assert message.get_json() == {"NaN": "Infinity", "n": 1500.0}
