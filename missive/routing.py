"""Router: finds the handlers whose matchers accept a message, using an index where it can."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic

from missive._names import matcher_name
from missive._types import Handler, M, MatcherFunc, callable_name
from missive.errors import MatcherError, RegistrationError
from missive.matchers import Field, IndexEntry, Matcher

__all__ = ["Router"]

# (extra condition or None, handler, handler name)
_Entry = tuple[Callable[[Any], object] | None, Handler[Any], str]


class Router(Generic[M]):
    """The routing table of a :class:`~missive.Processor`.

    Matchers from :mod:`missive.matchers` that test one field for equality or
    membership go into an index (one dictionary per field); every other callable is
    offered each message in turn. :meth:`candidates` consults both, so the
    exactly-one rule holds across the two kinds.
    """

    def __init__(self) -> None:
        #: ``(matcher, handler, handler name)`` for every handler, in registration order.
        self.routes: list[tuple[MatcherFunc[M], Handler[M], str]] = []
        #: The routes offered every message: their matchers are not indexed.
        self.plain: list[tuple[MatcherFunc[M], Handler[M], str]] = []
        #: ``(field, {value: [(extra condition or None, handler, name)]})``, a field each.
        self.indexes: list[tuple[Field, dict[Hashable, list[_Entry]]]] = []
        self._tables: dict[Field, dict[Hashable, list[_Entry]]] = {}

    def add(self, matcher: MatcherFunc[M], handler: Handler[M]) -> None:
        """Route messages that ``matcher`` accepts to ``handler``.

        :raises TypeError: if ``matcher`` is not callable.
        :raises RegistrationError: if the matcher object is already registered, or
            it is an indexed test that overlaps another handler's for certain.
        """
        if not callable(matcher):
            raise TypeError(
                f"a matcher must be callable (message -> bool), not {type(matcher).__name__} "
                f"{matcher!r}"
            )
        name = callable_name(handler)
        for registered, _, other in self.routes:
            if registered is matcher:
                raise RegistrationError(
                    f"matcher {matcher_name(matcher)} of handler {name!r} is already registered "
                    f"for handler {other!r}; every message goes to exactly one handler, so give "
                    "each handler its own matcher"
                )
        entry = matcher.index_entry() if isinstance(matcher, Matcher) else None
        if entry is None:
            self.plain.append((matcher, handler, name))
        else:
            self._index(entry, repr(matcher), handler, name)
        self.routes.append((matcher, handler, name))

    def _index(self, entry: IndexEntry, matcher: str, handler: Handler[M], name: str) -> None:
        table = self._tables.get(entry.field)
        if table is None:
            table = self._tables[entry.field] = {}
            self.indexes.append((entry.field, table))
        if entry.residual is None:
            for value in entry.values:
                for residual, _, other in table.get(value, ()):
                    if residual is None:
                        raise RegistrationError(
                            f"handlers {other!r} and {name!r} both match every message whose "
                            f"{entry.field!r} is {value!r} ({matcher}); every message goes "
                            "to exactly one handler, so make their matchers exclusive"
                        )
        for value in entry.values:
            table.setdefault(value, []).append((entry.residual, handler, name))

    def candidates(self, message: M) -> list[tuple[Handler[M], str]]:
        """Every ``(handler, name)`` whose matcher accepts ``message``.

        :raises MatcherError: if a matcher (or reading an indexed field) raised.
        """
        found: list[tuple[Handler[M], str]] = []
        for field, table in self.indexes:
            try:
                value = field.extract(message)
            except Exception as exc:
                raise MatcherError(message.message_id, field, exc, self.readers(field)) from exc
            try:
                entries = table.get(value)
            except TypeError:  # an unhashable value (a list, a dict) is no key
                continue
            if entries:
                for residual, handler, name in entries:
                    if residual is None:
                        found.append((handler, name))
                        continue
                    try:
                        if residual(message):
                            found.append((handler, name))
                    except Exception as exc:
                        raise MatcherError(message.message_id, residual, exc, (name,)) from exc
        for matcher, handler, name in self.plain:
            try:
                if matcher(message):
                    found.append((handler, name))
            except Exception as exc:
                raise MatcherError(message.message_id, matcher, exc, (name,)) from exc
        return found

    def readers(self, field: object) -> tuple[str, ...]:
        """The names of the handlers indexed on ``field``, in registration order.

        Their routing reads the field, so a field that raises is theirs. ``()`` when
        ``field`` is not one of the fields in :attr:`indexes` (compared by identity:
        it may be any matcher, even an unhashable one).
        """
        for indexed, table in self.indexes:
            if indexed is field:
                names = {name for entries in table.values() for _, _, name in entries}
                return tuple(dict.fromkeys(name for _, _, name in self.routes if name in names))
        return ()
