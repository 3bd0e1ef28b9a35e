"""A PostgresDLQ's own connections: where they go (without the password), and opening one.

Imported only by :mod:`missive.dlq.postgres`, which turns a missing psycopg into
:class:`~missive.MissingExtraError` before importing this module.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from missive.dlq._postgres_errors import problem
from missive.errors import DLQError

__all__ = ["connect", "describe", "describe_connection", "resolve_schema"]


def describe(conninfo: str) -> str:
    """Where ``conninfo`` (a URL or ``key=value`` string) points, without its password."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        # Never echo it: an unparsable string may still hold a password.
        raise DLQError(
            "cannot open the PostgreSQL DLQ: its connection string is not a valid "
            "postgresql://user@host:port/database URL or key=value string"
        ) from None
    return _where(params.get("user"), params.get("host"), params.get("port"), params.get("dbname"))


def describe_connection(conn: psycopg.Connection[Any]) -> str:
    """Where an open connection points, without its password."""
    info = conn.info
    return _where(info.user, info.host, str(info.port), info.dbname)


def _where(user: object, host: object, port: object, dbname: object) -> str:
    user_part = f"{user}@" if user else ""
    host_part = str(host) if host else "localhost"
    port_part = f":{port}" if port else ""
    return f"postgresql://{user_part}{host_part}{port_part}/{dbname or ''}"


def connect(
    conninfo: str,
    where: str,
    *,
    application_name: str,
    connect_timeout: float,
    statement_timeout: float,
    read_only: bool = False,
) -> psycopg.Connection[Any]:
    """A new autocommit connection for a DLQ this module owns, with its session set.

    ``read_only`` makes it a read-only session (``default_transaction_read_only``).

    :raises DLQError: naming the server (never the password) and what to do.
    """
    options: dict[str, Any] = {"fallback_application_name": application_name}
    if "connect_timeout" not in conninfo_to_dict(conninfo):
        options["connect_timeout"] = max(2, round(connect_timeout))
    try:
        conn = psycopg.connect(conninfo, autocommit=True, **options)
    except psycopg.Error as exc:
        raise DLQError(problem(where, exc, "connect", conninfo)) from None
    try:
        # Durability: a commit must reach the disk before a write returns, whatever
        # the server's default; a server that already syncs harder is left alone.
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false), "
            "CASE WHEN current_setting('synchronous_commit') = 'off' "
            "THEN set_config('synchronous_commit', 'on', false) END, "
            "CASE WHEN %s THEN set_config('default_transaction_read_only', 'on', false) END",
            (f"{round(statement_timeout * 1000)}ms", read_only),
        )
    except psycopg.Error as exc:
        conn.close()
        raise DLQError(problem(where, exc, "set up the session", conninfo)) from None
    return conn


def resolve_schema(conn: psycopg.Connection[Any], where: str) -> str:
    """The schema unqualified names go to on ``conn`` (the first of its search_path)."""
    with conn.transaction(), conn.cursor() as cur:
        row = cur.execute("SELECT current_schema()").fetchone()
    if not row or row[0] is None:
        raise DLQError(
            f"PostgreSQL DLQ at {where}: the search_path names no existing schema; "
            "pass schema='...' to choose one"
        )
    return str(row[0])
