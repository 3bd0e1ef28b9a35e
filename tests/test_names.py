"""missive._names: names for matchers, handlers and hooks that hold no memory address."""

import functools
from typing import Any

from missive._names import callable_name, describe_matcher, matcher_name
from missive.matchers import JSONField, RawPrefix

MODULE_LAMBDA = lambda message: True  # noqa: E731 - the case under test


class Checks:
    in_class_body = lambda self, message: True  # noqa: E731 - the case under test

    def method(self, message: Any) -> bool:
        return True


class Opaque:
    def __call__(self, message: Any) -> bool:
        return True


def test_a_missive_matcher_is_its_repr() -> None:
    matcher = JSONField("kind").equals("order") & ~RawPrefix(b"#")

    assert matcher_name(matcher) == repr(matcher)


def test_a_function_is_its_qualified_name_without_the_locals_path() -> None:
    def has_kind(message: Any) -> bool:
        return True

    assert matcher_name(has_kind) == "has_kind"
    assert matcher_name(Checks().method) == "Checks.method"


def test_a_lambda_says_where_it_was_written() -> None:
    def build() -> Any:
        return lambda message: True

    assert matcher_name(MODULE_LAMBDA) == "<lambda> in tests.test_names"
    assert matcher_name(Checks.in_class_body) == "<lambda> in tests.test_names.Checks"
    assert matcher_name(build()) == (
        "<lambda> in tests.test_names.test_a_lambda_says_where_it_was_written.build"
    )


def test_an_object_is_its_repr_without_addresses() -> None:
    assert matcher_name(Opaque()) == "<tests.test_names.Opaque object>"
    partial = functools.partial(lambda flag, message: flag, True)
    assert "0x" not in matcher_name(partial)
    assert "0x" not in callable_name(partial)


def test_the_description_lists_three_handlers_then_a_count() -> None:
    field = JSONField("kind")

    assert describe_matcher(field, ()) == "matcher JSONField('kind')"
    assert describe_matcher(field, ("a",)) == "matcher JSONField('kind') of handler 'a'"
    assert describe_matcher(field, ("a", "b", "c")) == (
        "matcher JSONField('kind') of handlers 'a', 'b', 'c'"
    )
    assert describe_matcher(field, ("a", "b", "c", "d")) == (
        "matcher JSONField('kind') of handlers 'a', 'b', 'c' and 1 more"
    )
