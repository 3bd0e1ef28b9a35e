"""Router: finds the handler whose matcher accepts a message, using an index where it can.

The texts of every routing failure are defined here, once: the DLQ reasons and
``missive routes check`` both use them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic

from missive._aio import is_async_callable
from missive._names import describe_matcher, matcher_name
from missive._types import Handler, M, MatcherFunc, callable_name
from missive.errors import MatcherError, MessageDecodeError, RegistrationError
from missive.matchers import Field, IndexEntry, Matcher
from missive.reason import DeadLetterReason
from missive.retry import Retry

__all__ = [
    "NO_HANDLER",
    "SEVERAL",
    "UNDECODABLE",
    "NoRoute",
    "Route",
    "Router",
    "raised",
]

#: The reason when no handler matches a message.
NO_HANDLER = "no handler matched the message"
#: The reason when several do (``count`` of them, their ``names`` joined by ", ").
SEVERAL = "{count} handlers matched the message, exactly one must: {names}"
#: The summary when a message could not be decoded (``problem``: the decode error's).
UNDECODABLE = "could not decode the message: {problem}"


class Route:
    """The one handler a message goes to, and its name; built once per handler.

    Unpacks as ``handler, name``. A slotted class, not a named tuple: reading its
    two attributes is the cheapest thing Python does, on every message.
    """

    __slots__ = ("handler", "is_async", "name", "retry")

    def __init__(self, handler: Handler[Any], name: str, retry: Retry | None = None) -> None:
        self.handler = handler
        self.name = name
        #: Whether the handler is an ``async def`` (a coroutine to await).
        self.is_async = is_async_callable(handler)
        #: The handler's own retry policy; ``None``: the processor's.
        self.retry = retry

    def __iter__(self) -> Iterator[Any]:
        return iter((self.handler, self.name))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Route):
            return NotImplemented
        return self.handler == other.handler and self.name == other.name

    def __hash__(self) -> int:
        return hash((self.handler, self.name))

    def __repr__(self) -> str:
        return f"Route({self.name!r})"


class NoRoute:
    """Why a message goes to no handler.

    ``kind`` is ``"unmatched"`` (no handler matches), ``"ambiguous"`` (several do)
    or ``"error"`` (a matcher raised, or the message could not be decoded);
    ``reason`` is the dead-letter reason.
    """

    __slots__ = ("kind", "reason")

    def __init__(self, kind: str, reason: DeadLetterReason) -> None:
        self.kind = kind
        self.reason = reason

    def __repr__(self) -> str:
        return f"NoRoute({self.kind!r}, {self.reason.summary!r})"


_UNMATCHED = NoRoute("unmatched", DeadLetterReason(NO_HANDLER))


def raised(what: str, exc: Exception, handler: str | None = None) -> DeadLetterReason:
    """The reason for ``exc``, raised by ``what`` (``"handler 'greet'"``, a matcher...).

    A :class:`~missive.MessageDecodeError` is summarized as :data:`UNDECODABLE`,
    whatever raised it, so that alike decode failures group together.
    """
    if isinstance(exc, MessageDecodeError):
        return DeadLetterReason(
            str(exc),
            summary=UNDECODABLE.format(problem=exc.problem),
            handler=handler,
            exc_type=type(exc).__qualname__,
            exception=exc,
        )
    return DeadLetterReason.from_exception(what, exc, handler=handler)


# (extra condition or None, route)
_Entry = tuple[Callable[[Any], object] | None, Route]


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
        #: ``(matcher, route)``, offered every message: their matchers are not indexed.
        self.plain: list[tuple[MatcherFunc[M], Route]] = []
        #: ``(field, {value: [(extra condition or None, route)]})``, a field each.
        self.indexes: list[tuple[Field, dict[Hashable, list[_Entry]]]] = []
        self._tables: dict[Field, dict[Hashable, list[_Entry]]] = {}
        #: Whether any handler is an ``async def``.
        self.any_async = False

    def add(self, matcher: MatcherFunc[M], handler: Handler[M], retry: Retry | None = None) -> None:
        """Route messages that ``matcher`` accepts to ``handler`` (retried under ``retry``,
        or the processor's policy when ``None``).

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
        route = Route(handler, name, retry)
        self.any_async = self.any_async or route.is_async
        if entry is None:
            self.plain.append((matcher, route))
        else:
            self._index(entry, repr(matcher), route)
        self.routes.append((matcher, handler, name))

    def _index(self, entry: IndexEntry, matcher: str, route: Route) -> None:
        name = route.name
        table = self._tables.get(entry.field)
        if table is None:
            table = self._tables[entry.field] = {}
            self.indexes.append((entry.field, table))
        if entry.residual is None:
            for value in entry.values:
                for residual, (_, other) in table.get(value, ()):
                    if residual is None:
                        raise RegistrationError(
                            f"handlers {other!r} and {name!r} both match every message whose "
                            f"{entry.field!r} is {value!r} ({matcher}); every message goes "
                            "to exactly one handler, so make their matchers exclusive"
                        )
        for value in entry.values:
            table.setdefault(value, []).append((entry.residual, route))

    def match(self, message: M) -> Route | NoRoute:
        """The one route for ``message``, or a :class:`NoRoute` saying why there is none.

        Never raises for a matcher that raised: that is a ``NoRoute`` of kind ``"error"``.
        This is the hot path: one match builds nothing.
        """
        matched = 0
        found: Route | None = None
        route: Route | None = None
        current: Any = None
        try:
            for current, table in self.indexes:
                value = current.extract(message)
                try:
                    entries = table.get(value)
                except TypeError:  # an unhashable value (a list, a dict) is no key
                    continue
                if entries:
                    for current, route in entries:
                        if current is None or current(message):
                            matched += 1
                            found = route
            for current, route in self.plain:
                if current(message):
                    matched += 1
                    found = route
        except Exception as exc:
            return self.matcher_failed(current, route, exc)
        if matched == 1:
            assert found is not None
            return found
        return self.no_route(matched, message)

    def matcher_failed(self, current: Any, route: Route | None, exc: Exception) -> NoRoute:
        """The NoRoute when ``current`` (a field or a matcher, last tried for ``route``) raised."""
        # A matcher's handler is ``route``'s; a field's, every handler indexed on it.
        handlers = self.readers(current) or (() if route is None else (route.name,))
        return NoRoute("error", raised(describe_matcher(current, handlers), exc))

    def no_route(self, matched: int, message: M) -> NoRoute:
        """The NoRoute when ``matched`` handlers (0, or 2 and more) matched ``message``."""
        if not matched:
            return _UNMATCHED
        return self._several(message)

    def _several(self, message: M) -> NoRoute:
        try:
            found = self.candidates(message)
        except MatcherError as exc:  # it matched a moment ago: a matcher with state
            what = describe_matcher(exc.matcher, exc.handlers)
            return NoRoute("error", raised(what, exc.error))
        names = ", ".join(name for _, name in found)
        return NoRoute("ambiguous", DeadLetterReason(SEVERAL.format(count=len(found), names=names)))

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
                for residual, route in entries:
                    if residual is None:
                        found.append((route.handler, route.name))
                        continue
                    try:
                        if residual(message):
                            found.append((route.handler, route.name))
                    except Exception as exc:
                        names = (route.name,)
                        raise MatcherError(message.message_id, residual, exc, names) from exc
        for matcher, route in self.plain:
            try:
                if matcher(message):
                    found.append((route.handler, route.name))
            except Exception as exc:
                raise MatcherError(message.message_id, matcher, exc, (route.name,)) from exc
        return found

    def readers(self, field: object) -> tuple[str, ...]:
        """The names of the handlers indexed on ``field``, in registration order.

        Their routing reads the field, so a field that raises is theirs. ``()`` when
        ``field`` is not one of the fields in :attr:`indexes` (compared by identity:
        it may be any matcher, even an unhashable one).
        """
        for indexed, table in self.indexes:
            if indexed is field:
                names = {route.name for entries in table.values() for _, route in entries}
                return tuple(dict.fromkeys(name for _, _, name in self.routes if name in names))
        return ()
