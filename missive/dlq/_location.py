"""open_dlq: a DLQ from a path or URL, as the command line and configuration give it.

This module is the one place that decides what a location is:

* ``scheme://...``: a URL; ``sqlite:///path`` an SQLite file, ``postgresql://`` and
  ``postgres://`` a PostgreSQL server;
* a libpq connection string, nothing but ``keyword=value`` pairs
  (``host=db dbname=app``): a PostgreSQL server;
* anything else: the path of an SQLite file. A file whose name is itself made of
  ``keyword=value`` pairs is written ``./name`` or ``sqlite:///name``.

It also hides the password of a location wherever it may be written: the URL's
user information, a ``password=`` query parameter, or a ``password=`` pair.
"""

from __future__ import annotations

import importlib
import re
from typing import Any
from urllib.parse import unquote

from missive.dlq.base import DeadLetterStore
from missive.errors import DLQError

__all__ = ["open_dlq", "passwords", "redacted", "sqlite_path"]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SQLITE_PREFIX = "sqlite:///"
# One libpq pair: a keyword, '=', and a value either single-quoted or bare, where
# a backslash escapes the next character.
_PAIR = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^'\\]|\\.)*'|(?!')(?:[^\s\\]|\\.)+)\s*",
    re.ASCII | re.DOTALL,
)
_KEYWORD = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=", re.ASCII)
# In a libpq string that does not parse, everything after the first password=.
_UNPARSED_PASSWORD = re.compile(r"password\s*=\s*", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)
_HIDDEN = "***"


def _pairs(location: str) -> list[re.Match[str]] | None:
    """The ``keyword=value`` pairs of a libpq connection string, or ``None`` if it is not one."""
    pairs: list[re.Match[str]] = []
    position = 0
    while position < len(location):
        match = _PAIR.match(location, position)
        if match is None:
            return None
        pairs.append(match)
        position = match.end()
    return pairs or None


def _scheme(location: str) -> str:
    """``sqlite``, ``postgresql`` (for a libpq string too), another scheme, or ``""`` for a path.

    A string that starts as a libpq pair but does not parse (an unclosed quote) is
    still one: the driver says what is wrong with it, and it is never echoed as a path.
    """
    match = _SCHEME.match(location)
    if match:
        return match.group(1).lower()
    return "postgresql" if _KEYWORD.match(location) else ""


def sqlite_path(location: str) -> str | None:
    """The file path of an SQLite location, or ``None`` for another kind of DLQ.

    A malformed ``sqlite:`` URL (``sqlite://host/x``) is not an SQLite location:
    :func:`open_dlq` explains what is wrong with it.
    """
    scheme = _scheme(location)
    if scheme == "":
        return location
    if scheme == "sqlite" and location[: len(_SQLITE_PREFIX)].lower() == _SQLITE_PREFIX:
        return location[len(_SQLITE_PREFIX) :]
    return None


def _unescape(value: str) -> str:
    if value.startswith("'"):
        value = value[1:-1]
    return re.sub(r"\\(.)", r"\1", value, flags=re.DOTALL)


def _url_password_span(location: str) -> tuple[int, int] | None:
    # The user information ends at the last '@': a password may hold '/' or '?'
    # typed unencoded, and hiding too much is better than showing part of one.
    start = location.index("://") + 3
    at = location.rfind("@", start)
    colon = location.find(":", start, at) if at != -1 else -1
    return (colon + 1, at) if colon != -1 else None


def passwords(location: str) -> list[str]:
    """The passwords written in ``location``, as written and as decoded."""
    found: list[str] = []
    if _SCHEME.match(location):
        span = _url_password_span(location)
        if span:
            found.append(location[span[0] : span[1]])
        found += [match.group(2) for match in _QUERY_PASSWORD.finditer(location)]
        found += [unquote(text) for text in found]
    elif (pairs := _pairs(location)) is not None:
        for pair in pairs:
            if pair.group(1).lower() == "password":
                found += [pair.group(2), _unescape(pair.group(2))]
    elif unparsed := _UNPARSED_PASSWORD.search(location):
        rest = location[unparsed.end() :]
        found += [rest, rest.lstrip("'"), *rest.lstrip("'").split()]
    return [text for text in dict.fromkeys(found) if text]


def redacted(location: str) -> str:
    """``location`` with each password in it replaced by ``***``; never raises."""
    if _SCHEME.match(location):
        span = _url_password_span(location)
        if span:
            location = location[: span[0]] + _HIDDEN + location[span[1] :]
        return _QUERY_PASSWORD.sub(lambda m: m.group(1) + _HIDDEN, location)
    pairs = _pairs(location)
    if pairs is None:
        unparsed = _UNPARSED_PASSWORD.search(location) if _KEYWORD.match(location) else None
        return location[: unparsed.end()] + _HIDDEN if unparsed else location
    for pair in reversed(pairs):
        if pair.group(1).lower() == "password":
            location = location[: pair.start(2)] + _HIDDEN + location[pair.end(2) :]
    return location


def open_dlq(
    location: str, *, create: bool = True, read_only: bool = False, **options: Any
) -> DeadLetterStore:
    """Open the DLQ at ``location``: a file path, ``sqlite:///path``, ``postgresql://...``
    or a libpq ``key=value`` string.

    A bare path (``dlq.db``) and ``sqlite:///dlq.db`` are an SQLite file relative to
    the working directory; ``sqlite:////var/dlq.db`` is absolute. ``postgresql://``
    and ``postgres://`` URLs and libpq strings (``host=db dbname=app``) need
    ``missive[postgres]``. With ``create=False`` a missing file or table is an error
    instead of being created (for tools that only inspect a DLQ). With
    ``read_only=True`` the store changes nothing (an SQLite file is opened read-only,
    a PostgreSQL session is read-only) and must exist. ``options`` go to the store's
    constructor. Errors show the location without its password.

    :raises DLQError: if the location is malformed, its scheme unknown, or the store
        cannot be opened.
    :raises MissingExtraError: if the backend's optional dependency is missing.
    """
    scheme = _scheme(location)
    if scheme in ("", "sqlite"):
        from missive.dlq.sqlite import SQLiteDLQ

        path = sqlite_path(location)
        if path is None:
            raise DLQError(
                f"cannot open DLQ {redacted(location)!r}: write SQLite URLs as "
                "sqlite:///relative/path or sqlite:////absolute/path"
            )
        if not path:
            raise DLQError("cannot open DLQ: no file path given; name an SQLite file")
        return SQLiteDLQ(path, create=create, read_only=read_only, **options)
    if scheme in ("postgresql", "postgres"):
        # Imported by name so that the core never imports a database driver.
        module = importlib.import_module("missive.dlq.postgres")
        store: DeadLetterStore = module.PostgresDLQ(
            location, create=create, read_only=read_only, **options
        )
        return store
    raise DLQError(
        f"cannot open DLQ {redacted(location)!r}: unknown scheme {scheme!r}; use a file "
        "path, sqlite:///path, postgresql://user@host/database or host=... dbname=..."
    )
