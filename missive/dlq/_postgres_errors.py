"""The texts of a PostgresDLQ's errors: what failed and what to do, never a row or password.

Imported only by :mod:`missive.dlq.postgres`, which turns a missing psycopg into
:class:`~missive.MissingExtraError` before importing this module.
"""

from __future__ import annotations

import logging
import re

import psycopg
from psycopg.conninfo import conninfo_to_dict

__all__ = ["problem"]

logger = logging.getLogger("missive.dlq.postgres")


def problem(where: str, exc: BaseException, what: str, conninfo: str | None = None) -> str:
    """The text of a :class:`DLQError`: where, what failed, and what to do about it.

    Safe to log: a server's error is summarised by its primary message (cut before
    any quoted value) and SQLSTATE, without the DETAIL, HINT, CONTEXT or statement
    that can quote a row's values or a statement's parameters. The driver's full
    text goes to the DEBUG log only. The password of ``conninfo`` is masked should
    the driver's text ever quote it.
    """
    text = " ".join(str(exc).split())
    if conninfo:
        password = conninfo_to_dict(conninfo).get("password")
        if password:
            text = text.replace(str(password), "***")
    logger.debug("PostgreSQL DLQ at %s: cannot %s: %s", where, what, text)
    shown = _summary(exc, text)
    lower = text.lower()
    if "password" in lower or ("role" in lower and "does not exist" in lower):
        advice = (
            "check the user name and password (in the URL, PGPASSWORD or ~/.pgpass) and "
            "that the role may log in to this database (pg_hba.conf)"
        )
    elif "database" in lower and "does not exist" in lower:
        advice = "create the database (createdb) or fix the database name in the URL"
    elif any(
        sign in lower
        for sign in (
            "connection refused",
            "could not connect",
            "timeout expired",
            "resolve host",
            "translate host name",
            "no route to host",
            "network is unreachable",
        )
    ):
        advice = (
            "check that PostgreSQL is running there and accepts TCP/IP connections from "
            "this machine (pg_isready -h HOST -p PORT)"
        )
    elif "permission denied" in lower:
        advice = (
            "grant this role USAGE and CREATE on the schema, or have the table's owner "
            "create it (open the DLQ once as that role)"
        )
    elif "read-only" in lower:
        advice = "the server is a read-only replica; point the DLQ at the primary"
    elif "statement timeout" in lower or "lock timeout" in lower:
        advice = "another session held the table locked; find it (pg_locks) or raise timeout"
    elif what == "connect":
        advice = "check the URL's host, port and options"
    elif isinstance(exc, psycopg.OperationalError):
        advice = (
            "the connection was lost (server restarted, connection ended or network "
            "failure); a DLQ opened with a URL reconnects at its next use"
        )
    else:
        advice = "check the server's log"
    return f"PostgreSQL DLQ at {where}: cannot {what} ({type(exc).__name__}: {shown}); {advice}"


# Where the server's text (or the client's) starts to quote rows, queries or values.
_QUOTING = re.compile(r"\s*\b(?:DETAIL|HINT|CONTEXT|QUERY|STATEMENT|LINE \d+):.*$")


def _summary(exc: BaseException, text: str) -> str:
    """What of a driver error may be shown: never a row, a parameter or a statement."""
    diag = getattr(exc, "diag", None)
    state = getattr(diag, "sqlstate", None)
    primary = getattr(diag, "message_primary", None)
    if state and primary:
        primary = " ".join(str(primary).split())
        # Data and constraint errors put the offending value after a colon.
        if state[:2] in ("22", "23", "42"):
            primary = primary.split(": ", 1)[0]
        return f"{primary} [SQLSTATE {state}]"
    return _QUOTING.sub("", text)
