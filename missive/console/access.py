"""The console's token: made at start or read from the environment, required on every request.

A request is let in when it carries the token in one of three places:

- ``?token=TOKEN`` in its address: the link printed when the console starts. A
  request let in this way also gets a cookie holding the token (``HttpOnly``,
  ``SameSite=Strict``), so that the pages' links and forms work without it;
- that cookie;
- an ``Authorization: Bearer TOKEN`` header, for scripts.

Tokens are compared with :func:`hmac.compare_digest`. The token is never logged
and never written into a page.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

__all__ = [
    "COOKIE_PREFIX",
    "MIN_TOKEN_LENGTH",
    "TOKEN_VARIABLE",
    "Access",
    "new_token",
    "redact_token",
    "token_from",
]

#: The environment variable that gives the console its token instead of a new one.
TOKEN_VARIABLE = "MISSIVE_CONSOLE_TOKEN"  # noqa: S105 (a variable's name, not a secret)
#: The shortest token taken from :data:`TOKEN_VARIABLE`.
MIN_TOKEN_LENGTH = 16
#: The cookie's name, followed by the server's port: two consoles on one host keep
#: a cookie each (browsers do not separate cookies by port).
COOKIE_PREFIX = "missive_console_"

_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
_IN_QUERY = re.compile(r"(?i)(token=)[^&\s]*")


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_from(environment: Mapping[str, str]) -> str | None:
    """The token :data:`TOKEN_VARIABLE` gives in ``environment``, or ``None`` if unset.

    :raises ValueError: if the variable is set but shorter than
        :data:`MIN_TOKEN_LENGTH` or holds a character that an address or a cookie
        would have to escape.
    """
    token = environment.get(TOKEN_VARIABLE)
    if token is None:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"{TOKEN_VARIABLE} must be at least {MIN_TOKEN_LENGTH} characters "
            "(unset it and the console makes one)"
        )
    if not _SAFE.fullmatch(token):
        raise ValueError(
            f"{TOKEN_VARIABLE} may hold only letters, digits and '-', '_', '.', '~' "
            "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))' makes one)"
        )
    return token


def redact_token(text: str) -> str:
    """``text`` (a request line) with the value of any ``token=`` replaced by ``...``."""
    return _IN_QUERY.sub(r"\1...", text)


class Access:
    """The check of the token on each request.

    :param token: the token every request must carry.
    """

    def __init__(self, token: str) -> None:
        self._token = token.encode("utf-8")

    def _is_token(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8"), self._token)

    def cookie_name(self, environ: Mapping[str, Any]) -> str:
        """The cookie's name for the server that received this request."""
        port = re.sub(r"[^0-9]", "", str(environ.get("SERVER_PORT", "")))
        return COOKIE_PREFIX + (port or "0")

    def check(self, environ: Mapping[str, Any]) -> list[tuple[str, str]] | None:
        """Whether the request carries the token.

        :returns: ``None`` if it does not; otherwise the headers to add to the
            answer: a ``Set-Cookie`` when the token came in the address and the
            cookie did not hold it yet, else none.
        """
        name = self.cookie_name(environ)
        cookie = _cookie(environ, name)
        if cookie is not None and self._is_token(cookie):
            return []
        header = str(environ.get("HTTP_AUTHORIZATION", ""))
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and self._is_token(credentials.strip()):
            return []
        query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
        if any(self._is_token(given) for given in query.get("token", [])):
            value = self._token.decode("utf-8")
            return [("Set-Cookie", f"{name}={value}; Path=/; HttpOnly; SameSite=Strict")]
        return None


def _cookie(environ: Mapping[str, Any], name: str) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(str(environ.get("HTTP_COOKIE", "")))
    except CookieError:
        return None
    morsel = jar.get(name)
    return None if morsel is None else morsel.value
