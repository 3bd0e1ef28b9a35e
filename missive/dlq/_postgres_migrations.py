"""Bringing a PostgresDLQ's table to this schema version, safely among many processes.

A table missing is created; one that is not a Missive DLQ, or of a newer version, is
refused; what came after version 1 without a version change (the attempts table) is
added when first needed. A version 1 table is upgraded to version 2 (the archive's
columns and the audit table) in place, once, by the first process that opens it to
write; opened read-only, it is refused until then.

Imported only by :mod:`missive.dlq.postgres`, which turns a missing psycopg into
:class:`~missive.MissingExtraError` before importing this module.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from missive.dlq._postgres_ddl import (
    SCHEMA_VERSION,
    Table,
    comment_version,
    create_attempts,
    create_table,
    upgrade_table,
)
from missive.errors import DLQError

__all__ = ["ensure_attempts", "prepare"]

logger = logging.getLogger("missive.dlq.postgres")

# The first key of the advisory lock that serializes creating a table: "MSV".
_LOCK_CLASS = 0x4D5356


def _lock(conn: psycopg.Connection[Any], table: Table) -> None:
    """Hold ``table``'s advisory lock until the transaction under way ends."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, table.qualified))


def prepare(
    conn: psycopg.Connection[Any],
    table: Table,
    where: str,
    *,
    create: bool = True,
    upgrade: bool = True,
) -> None:
    """Create ``table`` (and its schema) if missing and ``create``, and check its version.

    Safe when many processes start at once: creation runs under a transaction-scoped
    advisory lock keyed by the table's name. A table that exists and is current
    costs one catalog query, and needs no CREATE privilege.

    An older table is upgraded in place (under the same lock) if ``upgrade``.

    :raises DLQError: if the table is another application's or of a newer version,
        missing when ``create`` is false, or older when ``upgrade`` is false.
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
        _lock(conn, table)
        version = _version(conn, table)
        if version is None:
            create_table(conn, table)
            logger.info(
                "created the DLQ table %s (schema version %d)", table.qualified, SCHEMA_VERSION
            )
            return
        if 1 <= version < SCHEMA_VERSION and upgrade:
            upgrade_table(conn, table)
            logger.info(
                "upgraded the DLQ table %s to schema version %d", table.qualified, SCHEMA_VERSION
            )
            return
    if version == SCHEMA_VERSION:  # another process created it meanwhile
        return
    if 1 <= version < SCHEMA_VERSION:
        raise DLQError(
            f"PostgreSQL DLQ at {where}: table {table.qualified} has schema version {version}, "
            f"older than this Missive's {SCHEMA_VERSION}, and was opened read-only; open it "
            "once to write (a worker, or a missive dlq command that changes it) to upgrade it"
        )
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
    return None if row is None else comment_version(row[0])


def ensure_attempts(conn: psycopg.Connection[Any], table: Table) -> None:
    """Create ``table``'s attempts table if missing (it came after schema version 1).

    Under the same advisory lock as the DLQ table's creation: concurrent ``CREATE
    TABLE IF NOT EXISTS`` statements can otherwise fail in PostgreSQL.
    """
    with conn.transaction():
        _lock(conn, table)
        create_attempts(conn, table)
