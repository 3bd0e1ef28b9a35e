"""A PostgresDLQ's connection and table: masked names, the schema, its version, clear errors.

Imported only by :mod:`missive.dlq.postgres`, which turns a missing psycopg into
:class:`~missive.MissingExtraError` before importing this module.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from missive.errors import DLQError

__all__ = [
    "ATTEMPTS_SUFFIX",
    "INDEX_SUFFIX",
    "SCHEMA_VERSION",
    "Table",
    "check_name",
    "connect",
    "describe",
    "describe_connection",
    "ensure_attempts",
    "prepare",
    "problem",
    "resolve_schema",
]

logger = logging.getLogger("missive.dlq.postgres")

#: The schema version this module writes, kept in the table's comment.
SCHEMA_VERSION = 1
_COMMENT = "missive dead letters, schema version {}"
_COMMENT_RE = re.compile(r"missive dead letters, schema version (\d+)")
# The first key of the advisory lock that serializes creating a table: "MSV".
_LOCK_CLASS = 0x4D5356
_MAX_IDENTIFIER = 63  # bytes; PostgreSQL silently truncates longer names
#: Added to the table's name to name its index on ``dead_lettered_at``.
INDEX_SUFFIX = "_dead_lettered_at"
#: Added to the table's name to name the table that counts attempts (shorter than
#: INDEX_SUFFIX, so a name that fits with the index's suffix fits with this one).
ATTEMPTS_SUFFIX = "_attempts"


@dataclass(frozen=True)
class Table:
    """The schema-qualified table of one DLQ and the statements that use it."""

    schema: str
    name: str

    @property
    def qualified(self) -> str:
        """``schema.name`` as text, for messages (not for SQL)."""
        return f"{self.schema}.{self.name}"

    @property
    def attempts(self) -> sql.Identifier:
        """The table that counts attempts at redelivered messages, beside this one."""
        return sql.Identifier(self.schema, f"{self.name}{ATTEMPTS_SUFFIX}")

    def sql(self, template: str, **identifiers: str) -> sql.Composed:
        """``template`` with ``{table}``, ``{attempts}`` (and each of ``identifiers``)
        quoted as identifiers."""
        names = {key: sql.Identifier(value) for key, value in identifiers.items()}
        return sql.SQL(template).format(
            table=sql.Identifier(self.schema, self.name), attempts=self.attempts, **names
        )


def check_name(value: object, what: str, suffix: str = "") -> str:
    """``value`` if it can name a table or schema as it is (with ``suffix`` added).

    :raises ValueError: if it is empty, not a ``str`` or longer than PostgreSQL keeps.
    """
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError(f"{what} must be a non-empty str, not {value!r}")
    if len(value.encode()) + len(suffix) > _MAX_IDENTIFIER:
        raise ValueError(f"{what} {value!r} is too long: PostgreSQL would truncate it")
    return value


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


def prepare(
    conn: psycopg.Connection[Any], table: Table, where: str, *, create: bool = True
) -> None:
    """Create ``table`` (and its schema) if missing and ``create``, and check its version.

    Safe when many processes start at once: creation runs under a transaction-scoped
    advisory lock keyed by the table's name. A table that exists and is current
    costs one catalog query, and needs no CREATE privilege.

    :raises DLQError: if the table is another application's or of a newer version,
        or missing when ``create`` is false.
    """
    with conn.transaction():
        version = _version(conn, table)
    if version == SCHEMA_VERSION:
        return
    if version is None and not create:
        raise DLQError(
            f"PostgreSQL DLQ at {where}: there is no table {table.qualified}; check the "
            "table's name (a worker creates it when it first opens the DLQ)"
        )
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, table.qualified)
        )
        version = _version(conn, table)
        if version is None:
            _create(conn, table)
            logger.info(
                "created the DLQ table %s (schema version %d)", table.qualified, SCHEMA_VERSION
            )
            return
    if version == SCHEMA_VERSION:  # another process created it meanwhile
        return
    if version < 0:
        raise DLQError(
            f"PostgreSQL DLQ at {where}: table {table.qualified} exists but is not a Missive "
            "DLQ (its comment names no schema version); choose another table='...'"
        )
    raise DLQError(
        f"PostgreSQL DLQ at {where}: table {table.qualified} has schema version {version}, "
        f"newer than this Missive's {SCHEMA_VERSION}; upgrade Missive or use another table"
    )


def _version(conn: psycopg.Connection[Any], table: Table) -> int | None:
    """The table's schema version: ``None`` if it is missing, ``-1`` if it is not ours."""
    with conn.cursor() as cur:
        row = cur.execute(
            "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (table.schema, table.name),
        ).fetchone()
    if row is None:
        return None
    found = _COMMENT_RE.fullmatch(row[0] or "")
    return int(found.group(1)) if found else -1


def _create(conn: psycopg.Connection[Any], table: Table) -> None:
    with conn.cursor() as cur:
        exists = cur.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (table.schema,)
        ).fetchone()
        if not exists:
            cur.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(table.schema))
            )
        cur.execute(
            table.sql(
                """CREATE TABLE IF NOT EXISTS {table} (
                    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    message_id bytea NOT NULL UNIQUE,
                    raw_data bytea NOT NULL,
                    message_class text NOT NULL,
                    attributes text NOT NULL,
                    reason text NOT NULL,
                    summary text NOT NULL,
                    handler text,
                    exc_type text,
                    traceback text,
                    first_dead_lettered_at timestamptz NOT NULL,
                    dead_lettered_at timestamptz NOT NULL,
                    times integer NOT NULL DEFAULT 1
                )"""
            )
        )
        cur.execute(
            table.sql(
                "CREATE INDEX IF NOT EXISTS {index} ON {table} (dead_lettered_at)",
                index=f"{table.name}{INDEX_SUFFIX}",
            )
        )
        cur.execute(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(
                sql.Identifier(table.schema, table.name),
                sql.Literal(_COMMENT.format(SCHEMA_VERSION)),
            )
        )


def ensure_attempts(conn: psycopg.Connection[Any], table: Table) -> None:
    """Create ``table``'s attempts table if missing (it came after schema version 1).

    Under the same advisory lock as the DLQ table's creation: concurrent ``CREATE
    TABLE IF NOT EXISTS`` statements can otherwise fail in PostgreSQL.
    """
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, table.qualified)
        )
        conn.execute(
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {} (
                    message_id bytea PRIMARY KEY,
                    attempts integer NOT NULL,
                    last_attempt_at timestamptz NOT NULL
                )"""
            ).format(table.attempts)
        )


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
