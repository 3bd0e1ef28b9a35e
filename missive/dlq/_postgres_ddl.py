"""A PostgresDLQ's tables: their names, and the statements that create them.

Imported only by :mod:`missive.dlq.postgres`, which turns a missing psycopg into
:class:`~missive.MissingExtraError` before importing this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from missive.dlq._sql import POSTGRES

__all__ = [
    "ATTEMPTS_SUFFIX",
    "AUDIT_SUFFIX",
    "INDEX_SUFFIX",
    "SCHEMA_VERSION",
    "Table",
    "check_name",
    "comment_version",
    "create_attempts",
    "create_table",
    "set_version",
    "upgrade_table",
]

#: The schema version this module writes, kept in the table's comment.
SCHEMA_VERSION = 2
_COMMENT = "missive dead letters, schema version {}"
_COMMENT_RE = re.compile(r"missive dead letters, schema version (\d+)")
_MAX_IDENTIFIER = 63  # bytes; PostgreSQL silently truncates longer names
#: Added to the table's name to name its index on ``dead_lettered_at``.
INDEX_SUFFIX = "_dead_lettered_at"
#: Added to the table's name to name the table that counts attempts (shorter than
#: INDEX_SUFFIX, so a name that fits with the index's suffix fits with this one).
ATTEMPTS_SUFFIX = "_attempts"
#: Added to the table's name to name its audit table (schema version 2).
AUDIT_SUFFIX = "_audit"
_DEAD_LETTERS, _ATTEMPTS = POSTGRES.tables()
_ARCHIVE_COLUMNS, _AUDIT = POSTGRES.upgrade()


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

    @property
    def audit(self) -> sql.Identifier:
        """The table of the operations run on this DLQ, beside this one."""
        return sql.Identifier(self.schema, f"{self.name}{AUDIT_SUFFIX}")

    def sql(self, template: str, **identifiers: str) -> sql.Composed:
        """``template`` with ``{table}``, ``{attempts}``, ``{audit}`` (and each of
        ``identifiers``) quoted as identifiers."""
        names = {key: sql.Identifier(value) for key, value in identifiers.items()}
        return sql.SQL(template).format(
            table=sql.Identifier(self.schema, self.name),
            attempts=self.attempts,
            audit=self.audit,
            **names,
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


def create_table(conn: psycopg.Connection[Any], table: Table) -> None:
    """Create ``table``'s schema if missing, the table, its index, and its comment
    naming :data:`SCHEMA_VERSION`; in the caller's transaction."""
    with conn.cursor() as cur:
        exists = cur.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (table.schema,)
        ).fetchone()
        if not exists:
            cur.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(table.schema))
            )
        cur.execute(table.sql(_DEAD_LETTERS))
        cur.execute(table.sql(_AUDIT))
        cur.execute(
            table.sql(
                "CREATE INDEX IF NOT EXISTS {index} ON {table} (dead_lettered_at)",
                index=f"{table.name}{INDEX_SUFFIX}",
            )
        )
    set_version(conn, table)


def set_version(conn: psycopg.Connection[Any], table: Table) -> None:
    """Write :data:`SCHEMA_VERSION` in ``table``'s comment."""
    conn.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            sql.Identifier(table.schema, table.name),
            sql.Literal(_COMMENT.format(SCHEMA_VERSION)),
        )
    )


def upgrade_table(conn: psycopg.Connection[Any], table: Table) -> None:
    """Bring a version 1 ``table`` to version 2 (the archive's columns and the audit
    table); in the caller's transaction."""
    for column in _ARCHIVE_COLUMNS:
        conn.execute(table.sql(f"ALTER TABLE {{table}} ADD COLUMN IF NOT EXISTS {column}"))
    conn.execute(table.sql(_AUDIT))
    set_version(conn, table)


def create_attempts(conn: psycopg.Connection[Any], table: Table) -> None:
    """Create ``table``'s attempts table if missing; in the caller's transaction."""
    conn.execute(table.sql(_ATTEMPTS))


def comment_version(comment: str | None) -> int:
    """The schema version a table's comment names; ``-1`` if it names none (not ours)."""
    found = _COMMENT_RE.fullmatch(comment or "")
    return int(found.group(1)) if found else -1
