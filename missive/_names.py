"""Names for handlers, hooks and matchers that are the same in every process.

They appear in reasons and log lines, which users group and count, so they never
hold a memory address.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["callable_name", "describe_matcher", "matcher_name"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# A matcher error lists this many handlers, then how many more.
_LISTED = 3


def callable_name(func: Any) -> str:
    """A short, readable name for a handler or hook: its qualified name, else its repr."""
    name = getattr(func, "__qualname__", None)
    if not isinstance(name, str):
        return _ADDRESS.sub("", repr(func))
    # A function defined inside another reads better without the "<locals>" path.
    return name.rpartition("<locals>.")[2]


def matcher_name(matcher: Any) -> str:
    """A stable description of a matcher.

    A function or method is its qualified name; a lambda, which has none of its own,
    says where it was written (``"<lambda> in shop.setup"``); any other object is its
    ``repr`` (readable for :mod:`missive.matchers`) without memory addresses.
    """
    name = getattr(matcher, "__qualname__", None)
    if not isinstance(name, str):
        return _ADDRESS.sub("", repr(matcher))
    if name.rpartition(".")[2] != "<lambda>":
        return callable_name(matcher)
    where = name.removesuffix("<lambda>").rstrip(".").replace(".<locals>", "")
    module = getattr(matcher, "__module__", None)
    place = ".".join(part for part in (module, where) if part)
    return f"<lambda> in {place}" if place else "<lambda>"


def describe_matcher(matcher: Any, handlers: Sequence[str]) -> str:
    """``"matcher <name> of handler 'h'"``: what raised while routing, for reasons.

    ``handlers`` are the handlers whose routing ran ``matcher``: one, or every
    handler indexed on a field whose reading raised.
    """
    what = f"matcher {matcher_name(matcher)}"
    if not handlers:
        return what
    if len(handlers) == 1:
        return f"{what} of handler {handlers[0]!r}"
    listed = ", ".join(repr(name) for name in handlers[:_LISTED])
    more = len(handlers) - _LISTED
    return f"{what} of handlers {listed}" + (f" and {more} more" if more > 0 else "")
