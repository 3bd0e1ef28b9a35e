"""PostgresDLQ: dead letters kept in a PostgreSQL table (``pip install 'missive[postgres]'``).

::

    from missive.dlq.postgres import PostgresDLQ

    processor.set_dlq(PostgresDLQ("postgresql://missive@db.internal/app"))

Many worker processes on many machines may write one table at once: each write is
one ``INSERT ... ON CONFLICT (message_id) DO UPDATE`` statement, committed (and, on
the server, flushed to its write-ahead log) before the write returns.

Schema (version 2, in the table's ``COMMENT``): one table, ``missive_dead_letters``
by default, one row a message id, and its audit table (``..._audit``); ids and
payloads are ``bytea``, times ``timestamptz``, attributes the same tagged JSON text
as SQLiteDLQ's. PostgreSQL text cannot hold the character NUL: in a reason,
traceback or class name it is stored as U+FFFD, so that such a dead letter is still
kept. (Lone surrogates are escaped for every store before they get here.)

Uses psycopg 3; only this module imports it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from missive.errors import DLQError, MissingExtraError

try:
    import psycopg
    from psycopg.rows import tuple_row
except ImportError as _exc:  # pragma: no cover - exercised by a test in a subprocess
    raise MissingExtraError("postgres", "missive.dlq.postgres") from _exc

from missive.dlq._codec import MessageClasses, log_stored, storage_keys
from missive.dlq._postgres_connection import ConnectionPoolLike, Connections
from missive.dlq._postgres_ddl import INDEX_SUFFIX, SCHEMA_VERSION, Table, check_name
from missive.dlq._postgres_errors import problem
from missive.dlq._postgres_migrations import ensure_attempts, prepare
from missive.dlq._postgres_session import resolve_schema
from missive.dlq._sql import POSTGRES, Statements
from missive.dlq._sql_store import SQLStore
from missive.message import Message

__all__ = ["DEFAULT_TABLE", "SCHEMA_VERSION", "ConnectionPoolLike", "PostgresDLQ"]

logger = logging.getLogger("missive.dlq.postgres")

#: The table used when none is given.
DEFAULT_TABLE = "missive_dead_letters"


class PostgresDLQ(SQLStore):
    """A DLQ in a PostgreSQL table; see :class:`~missive.dlq.DeadLetterStore`.

    Given a URL, the store owns one autocommit connection per process, guarded by a
    lock so any thread may use it; a connection lost (server restarted, backend
    ended) fails the operation under way with :class:`~missive.DLQError`, and the
    next operation reconnects. A process forked after opening leaves the parent's
    connection alone and opens its own. Given a connection or a pool instead, the
    store uses it and never closes it: it must not be inside a transaction when the
    store uses it, and it cannot be reconnected by the store.

    :param dsn_or_pool: a ``postgresql://user:password@host:port/database`` URL or
        libpq ``key=value`` string; or an open ``psycopg.Connection``; or a pool such
        as ``psycopg_pool.ConnectionPool``.
    :param table: the table's name; created (with its index) if missing.
    :param schema: the table's schema, created if missing; by default the first
        schema of the connection's ``search_path`` (usually ``public``).
    :param message_classes: message classes to rebuild stored messages with, in
        addition to every :class:`~missive.Message` subclass already imported.
    :param application_name: how the store's own connections show in
        ``pg_stat_activity``, unless the URL or ``PGAPPNAME`` names one.
    :param connect_timeout: seconds to wait for the server when connecting (at
        least 2), unless the URL sets ``connect_timeout``.
    :param timeout: seconds a statement may wait (for locks, say) before it fails,
        on the store's own connections.
    :param create: whether to create the table (and schema) when missing; tools that
        only inspect a DLQ pass ``False`` so that a mistyped table is an error.
    :param read_only: for tools that only look: the table must exist, the store's own
        connections are read-only sessions, and writing raises
        :class:`~missive.DLQError`.
    :raises DLQError: if the server cannot be reached, refuses the user or password,
        has no such database, denies creating the table, or holds a table of that
        name that is not a Missive DLQ or is of a newer schema version, or has no such
        table and ``create`` is false. The message names the server, never the password.
    :raises ValueError: if ``table`` or ``schema`` is not a usable name.
    :raises TypeError: if ``dsn_or_pool`` is not a string, connection or pool.
    """

    def __init__(
        self,
        dsn_or_pool: str | psycopg.Connection[Any] | ConnectionPoolLike,
        *,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        message_classes: Iterable[type[Message]] = (),
        application_name: str = "missive-dlq",
        connect_timeout: float = 10.0,
        timeout: float = 30.0,
        create: bool = True,
        read_only: bool = False,
    ) -> None:
        check_name(table, "table", INDEX_SUFFIX)
        #: Whether the store was opened only to read.
        self.read_only = read_only
        if schema is not None:
            check_name(schema, "schema")
        self._classes = MessageClasses(message_classes, logger)
        self._connections = Connections(
            dsn_or_pool,
            application_name=application_name,
            connect_timeout=connect_timeout,
            statement_timeout=timeout,
            read_only=read_only,
        )
        try:
            with self._connections.borrow() as conn:
                #: The table, with its schema.
                self.table = Table(schema or resolve_schema(conn, self.where), table)
                prepare(
                    conn,
                    self.table,
                    self.where,
                    create=create and not read_only,
                    upgrade=not read_only,
                )
        except psycopg.Error as exc:
            self.close()
            raise DLQError(
                problem(self.where, exc, "create or check the table", self._connections.dsn)
            ) from None
        except BaseException:
            self.close()
            raise
        self._sql = Statements(POSTGRES, self.table.sql)
        self._attempts_ready = False
        logger.debug("opened DLQ %s table %s", self.where, self.table.qualified)

    @property
    def where(self) -> str:
        """Where the store is, as ``postgresql://user@host:port/database`` (no password)."""
        return self._connections.where

    def _execute(self, what: str, query: Any, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run ``query`` in its own committed transaction: its rows, or ``[rowcount]``."""
        try:
            with self._connections.borrow() as conn, conn.cursor(row_factory=tuple_row) as cur:
                if conn.autocommit:
                    cur.execute(query, params)
                else:
                    with conn.transaction():
                        cur.execute(query, params)
                return cur.fetchall() if cur.description else [cur.rowcount]
        except psycopg.Error as exc:
            raise DLQError(problem(self.where, exc, what, self._connections.dsn)) from None

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise DLQError(
                f"PostgreSQL DLQ at {self.where}: cannot {what}: it was opened read-only"
            )

    def _write_all(self, what: str, steps: Sequence[tuple[Any, Sequence[Any]]]) -> list[int]:
        self._writable(what)
        counts = []
        try:
            with (
                self._connections.borrow() as conn,
                conn.transaction(),
                conn.cursor(row_factory=tuple_row) as cur,
            ):
                for statement, rows in steps:
                    changed = 0
                    for params in rows:
                        cur.execute(statement, params)
                        changed += max(cur.rowcount, 0)
                    counts.append(changed)
        except psycopg.Error as exc:
            raise DLQError(problem(self.where, exc, what, self._connections.dsn)) from None
        return counts

    def __setitem__(self, message_id: bytes, value: tuple[Message, str]) -> None:
        self.put_many([(message_id, value)])

    def put_many(self, entries: Sequence[tuple[bytes, tuple[Message, str]]]) -> None:
        """Store several dead letters in one transaction; see
        :meth:`DeadLetterStore.put_many`."""
        rows = POSTGRES.rows(entries)
        if not rows:
            return
        what = (
            f"store dead letter {rows[0][0]!r}"
            if len(rows) == 1
            else (f"store {len(rows)} dead letters")
        )
        self._writable(what)
        try:
            with (
                self._connections.borrow() as conn,
                conn.transaction(),
                conn.cursor(row_factory=tuple_row) as cur,
            ):
                # Each statement decides alone: concurrent writers need no lock. All
                # go in one round trip; a row not written (its id holds another
                # payload) then tries its other keys in turn.
                cur.executemany(
                    self._sql.upsert, [(row[0], *row[2]) for row in rows], returning=True
                )
                written = [bool(cur.fetchall())]
                while cur.nextset():
                    written.append(bool(cur.fetchall()))
                keys = [
                    row[0] if done else self._other_key(cur, *row)
                    for row, done in zip(rows, written, strict=True)
                ]
        except psycopg.Error as exc:
            raise DLQError(problem(self.where, exc, what, self._connections.dsn)) from None
        for (message_id, data, _), key in zip(rows, keys, strict=True):
            log_stored(logger, message_id, key, len(data))

    def _other_key(
        self, cur: psycopg.Cursor[Any], message_id: bytes, data: bytes, fields: tuple[Any, ...]
    ) -> bytes:
        for key in itertools.islice(storage_keys(message_id, data), 1, None):
            cur.execute(self._sql.upsert, (key, *fields))
            if cur.fetchall():  # a row: stored
                return key
        raise DLQError(
            f"PostgreSQL DLQ at {self.where}: cannot store dead letter {message_id!r}: too "
            "many other payloads already stored under this id; delete some"
        )

    def record_attempt(self, message_id: bytes) -> int:
        """Count one more attempt at ``message_id``; see :class:`DeadLetterStore`."""
        what = f"count an attempt at message {message_id!r}"
        self._writable(what)
        if not self._attempts_ready:
            try:
                with self._connections.borrow() as conn:
                    ensure_attempts(conn, self.table)
            except psycopg.Error as exc:
                raise DLQError(problem(self.where, exc, what, self._connections.dsn)) from None
            self._attempts_ready = True
        rows = self._execute(what, self._sql.count_attempt, (message_id, self._sql.dialect.now()))
        return int(rows[0][0])

    def forget_attempts(self, message_id: bytes) -> None:
        """Drop the attempts counted for ``message_id``; see :class:`DeadLetterStore`."""
        self._writable(f"forget the attempts at message {message_id!r}")
        if not self._attempts_ready:
            return  # the processor forgets only what it counted through this store
        self._execute(
            f"forget the attempts at message {message_id!r}",
            self._sql.forget_attempts,
            (message_id,),
        )

    def __delitem__(self, message_id: bytes) -> None:
        if type(message_id) is not bytes:
            raise KeyError(message_id)
        self._writable(f"delete {message_id!r}")
        [deleted] = self._execute(f"delete {message_id!r}", self._sql.delete, (message_id,))
        if not deleted:
            raise KeyError(message_id)

    def delete_many(self, message_ids: Iterable[bytes]) -> int:
        """Delete those of ``message_ids`` that are stored, in one statement (one
        commit); see :meth:`DeadLetterStore.delete_many`."""
        keys = [key for key in dict.fromkeys(message_ids) if type(key) is bytes]
        if not keys:
            return 0
        what = f"delete {len(keys)} dead letter(s)"
        self._writable(what)
        [deleted] = self._execute(what, self._sql.delete_any, (keys,))
        return int(deleted)

    def close(self) -> None:
        """Close the store's own connection; idempotent. A connection or pool it was
        given is left open for its owner to close. The store cannot be used afterwards.
        """
        if self._connections.close():
            logger.debug("closed DLQ %s", self.where)

    def __repr__(self) -> str:
        table = getattr(self, "table", None)
        name = f" table {table.qualified}" if table else ""
        return f"<PostgresDLQ {self.where}{name}{' closed' if self._connections.closed else ''}>"
