"""The console's WSGI application: routing, the token, the CSRF check, the security headers.

Every request must carry the console's token (see :mod:`missive.console.access`);
one that does not is answered 401 before anything else is read.

Routes::

    GET  /              the failure groups
    GET  /letters       the list: ?handler= &reason= &since= &before= &group= &archived=1 &page=
    GET  /letter?id=ID  one dead letter (&view=hex for the payload in hex)
    POST /actions       action=replay|archive|purge, csrf=TOKEN, and id=ID... or group=ID

The DLQ is opened for each request (read-only for pages) and closed after it, so
the application holds no connection between requests and can run in any WSGI
server, threaded or forked.
"""

from __future__ import annotations

import argparse
import hmac
import itertools
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from missive.cli._common import CLIError, open_store, parse_id, parse_time
from missive.console import views
from missive.console.access import Access, new_token
from missive.console.actions import Replayer, choose, run_action
from missive.dlq import DeadLetterStore
from missive.dlq.groups import group_records, is_fingerprint
from missive.errors import MissiveError

__all__ = ["PAGE_SIZE", "Console"]

#: Dead letters on a page of the list.
PAGE_SIZE = 50
#: The largest request body read (a form of ticked ids).
MAX_BODY = 1 << 20

_log = logging.getLogger("missive.console")
_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]
_STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    413: "413 Content Too Large",
    503: "503 Service Unavailable",
}

StartResponse = Callable[..., Any]


class _ProblemError(Exception):
    """A request answered with an error page: its status and one line of text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


class Console:
    """The web console over one DLQ, as a WSGI application (the instance is the callable).

    :param location: the DLQ's path or URL, as ``--dlq`` takes it.
    :param table: a PostgreSQL DLQ's table, as ``--dlq-table``.
    :param replayer: how to replay, if the console may (in process or to a broker).
    :param hosts: the host names a request's ``Host`` may give (any port); ``None``
        takes any. A console on loopback takes only loopback names, so that a page
        elsewhere cannot reach it through DNS rebinding.
    :param token: the token every request must carry (in its address, the cookie
        set from it, or an ``Authorization: Bearer`` header); ``None`` makes one,
        readable as :attr:`token`.

    Every POST must also carry :attr:`csrf`, a random token made for this instance
    and written into each form.
    """

    def __init__(
        self,
        location: str,
        table: str | None = None,
        *,
        replayer: Replayer | None = None,
        hosts: Iterable[str] | None = None,
        token: str | None = None,
    ) -> None:
        self.location = location
        self.table = table
        self.replayer = replayer or Replayer()
        self.hosts = None if hosts is None else frozenset(host.lower() for host in hosts)
        #: The token every request must carry.
        self.token = new_token() if token is None else token
        self._access = Access(self.token)
        #: The CSRF token every POST must carry; new for each instance.
        self.csrf = secrets.token_urlsafe(32)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """Answer one request."""
        extra: list[tuple[str, str]] = []
        try:
            self._check_host(environ)
            extra = self._check_token(environ)
            status, text = 200, self._route(environ)
        except _ProblemError as exc:
            status, text = exc.status, views.message_page("Error", error=str(exc))
            if status == 401:
                extra = [("WWW-Authenticate", 'Bearer realm="missive console"')]
        except (CLIError, MissiveError) as exc:
            status = 503
            text = views.message_page("Error", error=str(exc).splitlines()[0])
        body = text.encode("utf-8")
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            *_HEADERS,
            *extra,
            ("Content-Length", str(len(body))),
        ]
        start_response(_STATUS[status], headers)
        return [body]

    def _check_host(self, environ: dict[str, Any]) -> None:
        if self.hosts is None:
            return
        host = str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""))
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name.lower().strip("[]") not in self.hosts:
            raise _ProblemError(
                403, "this console answers only to its own address (check the Host)"
            )

    def _check_token(self, environ: dict[str, Any]) -> list[tuple[str, str]]:
        headers = self._access.check(environ)
        if headers is None:
            raise _ProblemError(
                401,
                "this console needs its token: open the address it printed when it "
                "started (ending in ?token=...)",
            )
        return headers

    def _route(self, environ: dict[str, Any]) -> str:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        pages = {"/": self._groups, "/letters": self._list, "/letter": self._letter}
        if path in pages:
            if method not in ("GET", "HEAD"):
                raise _ProblemError(405, "pages are read with GET; actions are posted to /actions")
            return pages[path](query)
        if path == "/actions":
            if method != "POST":
                raise _ProblemError(405, "actions are POST requests, from the console's forms")
            return self._action(_form(environ))
        raise _ProblemError(404, "no such page")

    def _open(self, *, read_only: bool) -> DeadLetterStore:
        return open_store(self.location, self.table, read_only=read_only)

    def _groups(self, query: dict[str, list[str]]) -> str:
        with self._open(read_only=True) as store:
            groups = group_records(store.records())
        return views.group_page(groups, self.csrf, self.replayer.available)

    def _list(self, query: dict[str, list[str]]) -> str:
        filters = {name: _one(query, name) for name in views.FILTERS}
        try:
            number = int(_one(query, "page") or "1")
        except ValueError:
            number = 0
        if number < 1:
            raise _ProblemError(400, "page must be a whole number from 1")
        args = _filter_args(filters)
        from missive.cli._filters import selected

        start = (number - 1) * PAGE_SIZE
        with self._open(read_only=True) as store:
            found = list(
                itertools.islice(selected(store, args, start + PAGE_SIZE + 1), start, None)
            )
        return views.list_page(
            found[:PAGE_SIZE],
            filters,
            number,
            len(found) > PAGE_SIZE,
            self.csrf,
            self.replayer.available,
        )

    def _letter(self, query: dict[str, list[str]]) -> str:
        text = _one(query, "id")
        if not text:
            raise _ProblemError(400, "which dead letter? /letter?id=ID")
        with self._open(read_only=True) as store:
            try:
                letter = store.record(parse_id(text))
            except KeyError:
                raise _ProblemError(404, "no dead letter with that id (it may be gone)") from None
        view = "hex" if _one(query, "view") == "hex" else "text"
        return views.letter_page(letter, self.csrf, self.replayer.available, view)

    def _action(self, form: dict[str, list[str]]) -> str:
        token = _one(form, "csrf")
        if not hmac.compare_digest(token.encode(), self.csrf.encode()):
            raise _ProblemError(403, "the form's CSRF token is missing or stale: reload the page")
        action = _one(form, "action")
        with self._open(read_only=False) as store:
            try:
                chosen = choose(store, form)
                outcome = run_action(store, action, chosen, self.replayer)
            except CLIError as exc:
                raise _ProblemError(400, str(exc)) from None
        _log.info("console: %s", outcome)
        return views.message_page("Done", notice=outcome)


def _one(values: dict[str, list[str]], name: str) -> str:
    found = values.get(name)
    return found[0].strip() if found else ""


def _form(environ: dict[str, Any]) -> dict[str, list[str]]:
    kind = str(environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise _ProblemError(400, "actions are posted as forms (application/x-www-form-urlencoded)")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if length < 0 or length > MAX_BODY:
        raise _ProblemError(413, f"a form must be at most {MAX_BODY} bytes")
    data = environ["wsgi.input"].read(length) if length else b""
    try:
        return parse_qs(data.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise _ProblemError(400, "the form is not UTF-8") from None


def _filter_args(filters: dict[str, str]) -> argparse.Namespace:
    """The list's filters as the ``missive dlq`` commands' options are parsed."""
    group = filters["group"].lower() or None
    if group is not None and not is_fingerprint(group):
        raise _ProblemError(400, "group must be a group id of 10 hex digits")
    try:
        since = parse_time(filters["since"]) if filters["since"] else None
        before = parse_time(filters["before"]) if filters["before"] else None
    except CLIError as exc:
        raise _ProblemError(400, str(exc)) from None
    return argparse.Namespace(
        reason=filters["reason"] or None,
        handler=filters["handler"] or None,
        since=since,
        before=before,
        group=group,
        archived=bool(filters["archived"]),
    )
