"""SQLiteDLQ: dead letters kept in an SQLite database file (standard library only).

::

    from missive.dlq.sqlite import SQLiteDLQ

    processor.set_dlq(SQLiteDLQ("/var/dlq.db"))

The database is in WAL mode with ``synchronous=FULL``: a dead letter is committed and
on disk before the write returns, and several processes can write one file at once
(each waits up to ``timeout`` seconds for the others). Do not put the file on a
network file system: SQLite's locking does not work there.

Schema (version 2, in ``PRAGMA user_version``): ``missive_dead_letters``, one row a
message id, and ``missive_audit``; times are ISO-8601 UTC text. A version 1 file is
upgraded in place when opened to write (read-only, it reads as one with nothing archived).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from missive.dlq import _sqlite_fork as fork
from missive.dlq._codec import MessageClasses, log_stored, storage_keys
from missive.dlq._legacy import path_of
from missive.dlq._sql import SQLITE, Statements
from missive.dlq._sql_store import SQLStore
from missive.dlq._sqlite_file import FileIdentity
from missive.dlq._sqlite_schema import (
    ATTEMPTS_TABLE,
    AUDIT_TABLE,
    CORRUPT_ADVICE,
    SCHEMA_VERSION,
    TABLE,
    open_database,
    problem,
    run_steps,
)
from missive.errors import DLQError
from missive.message import Message

__all__ = ["SCHEMA_VERSION", "TABLE", "SQLiteDLQ"]

logger = logging.getLogger("missive.dlq.sqlite")

_T = TypeVar("_T")

# Rows in one statement: 11 parameters each, under SQLite's limit (999 before 3.32).
_ROWS_A_STATEMENT = 1000 if sqlite3.sqlite_version_info >= (3, 32) else 90

_SQL = Statements(
    SQLITE, lambda sql: sql.format(table=TABLE, attempts=ATTEMPTS_TABLE, audit=AUDIT_TABLE)
)


class SQLiteDLQ(SQLStore):
    """A DLQ in an SQLite database file; see :class:`~missive.dlq.DeadLetterStore`.

    The file and its table are created if missing. One connection serves the whole
    process, guarded by a lock, so the store may be used from any thread (SQLite
    serializes writes anyway). A process forked after the store was opened leaves the
    parent's connection alone and opens its own on first use.

    :param path: the database file; its directory must exist.
    :param timeout: how many seconds a write waits for other processes' writes.
    :param message_classes: message classes to rebuild stored messages with, in
        addition to every :class:`~missive.Message` subclass already imported.
    :param create: whether to create the file when it does not exist; tools that only
        inspect a DLQ pass ``False`` so that a mistyped path is an error.
    :param read_only: open the file so that nothing can change it (no WAL switch, no
        schema, no writes: writing raises :class:`~missive.DLQError`); the DLQ must
        exist. For tools that only look.
    :param allow_other_tables: add the DLQ's tables to a database that already holds
        other tables; without it such a database is refused, never changed.
    :param connection_str: deprecated: missive 0.8.1's name for ``path`` (the file
        it gave to :func:`sqlite3.connect`); accepted with a :class:`DeprecationWarning`.

    After each write's commit the store checks that the path still leads to the file
    it opened (same device and inode, an SQLite header, its application id): a file
    removed, truncated or overwritten meanwhile fails the write with
    :class:`~missive.DLQError`, so the message is not acked. A file
    that SQLite reports malformed fails that write and every later one.

    :raises DLQError: if the path is a directory, its directory does not exist, the
        file cannot be created or written, is not an SQLite database, is damaged, is
        another application's database (other tables, or another ``user_version``,
        and no DLQ table), a DLQ written by missive 0.8.1 (its ``messages`` table:
        copy it with ``missive dlq import-legacy``), was written by a newer schema
        version, or does not exist and ``create`` is false (or ``read_only`` is true).
    :raises TypeError: if neither ``path`` nor ``connection_str`` is given, or both.
    """

    _sql = _SQL

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 30.0,
        message_classes: Iterable[type[Message]] = (),
        create: bool = True,
        read_only: bool = False,
        allow_other_tables: bool = False,
        connection_str: str | None = None,
    ) -> None:
        path = path_of(path, connection_str)
        #: The database file's path.
        self.path = os.fspath(path)
        #: Whether the store was opened only to read.
        self.read_only = read_only
        if read_only and self.path == ":memory:":
            raise DLQError("a read-only SQLite DLQ needs a file, not ':memory:'")
        missing = not (create and not read_only)
        if missing and self.path != ":memory:" and not os.path.exists(self.path):
            raise DLQError(
                f"cannot open the SQLite DLQ {self.path!r}: no such file; check the path"
            )
        #: How many seconds a write waits for other processes' writes.
        self.timeout = timeout
        self._classes = MessageClasses(message_classes, logger)
        self._lock = threading.Lock()
        self._closed = False
        self._broken: str | None = None
        self._options = {"read_only": read_only, "allow_other_tables": allow_other_tables}
        self._connection = open_database(self.path, timeout, **self._options)
        self._identity = self._identify()
        self._pid = os.getpid()
        fork.register(self)

    def _conn(self) -> sqlite3.Connection:
        # Call with the lock held.
        if self._closed:
            raise DLQError(f"the SQLite DLQ at {self.path!r} is closed; open a new SQLiteDLQ")
        if self._pid != os.getpid():
            fork.inherited.append(self._connection)
            self._connection = open_database(self.path, self.timeout, **self._options)
            self._identity = self._identify()
            self._pid = os.getpid()
        return self._connection

    def _identify(self) -> FileIdentity | None:
        if self.path == ":memory:" or self.read_only:
            return None
        try:
            return FileIdentity(self.path)
        except OSError as exc:
            self._connection.close()
            raise DLQError(
                f"cannot open the SQLite DLQ at {self.path!r}: the file vanished as it was "
                f"opened ({type(exc).__name__}); check who removes it"
            ) from None

    def _write(self, what: str, statements: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``statements`` (each one committed by itself) on the file the store opened.

        The check after the commit is what makes a write safe to ack: the statements
        reached the file that the path still leads to.

        :raises DLQError: if the store is read-only or broken, the file was removed,
            truncated or overwritten, or SQLite fails; a malformed file breaks the
            store for good.
        """
        with self._lock:
            conn = self._conn()
            if self.read_only:
                raise DLQError(
                    f"SQLite DLQ at {self.path!r}: cannot {what}: it was opened read-only"
                )
            if self._broken is not None:
                raise DLQError(f"SQLite DLQ at {self.path!r}: cannot {what}: {self._broken}")
            try:
                result = statements(conn)
            except sqlite3.Error as exc:
                if "malformed" in str(exc) or "not a database" in str(exc):
                    self._broken = f"SQLite reported the file damaged; {CORRUPT_ADVICE}"
                raise DLQError(problem(self.path, exc, what, self.timeout)) from exc
            if self._identity is not None:
                self._identity.check(what)
            return result

    def _execute(self, what: str, query: Any, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            conn = self._conn()
            try:
                return conn.execute(query, params).fetchall()
            except sqlite3.Error as exc:
                raise DLQError(problem(self.path, exc, what, self.timeout)) from exc

    def _write_all(self, what: str, steps: Sequence[tuple[Any, Sequence[Any]]]) -> list[int]:
        return self._write(what, lambda conn: run_steps(conn, steps))

    def __setitem__(self, message_id: bytes, value: tuple[Message, str]) -> None:
        self.put_many([(message_id, value)])

    def restore(
        self, message_id: bytes, value: tuple[Message, str], at: datetime | None = None
    ) -> None:
        """Store a dead letter as ``dlq[message_id] = value`` does, dead-lettered ``at``.

        For imports (``missive dlq import-legacy``): the record keeps the time the
        message was first dead-lettered elsewhere. ``at`` must be aware; ``None``: now.
        """
        self.put_many([(message_id, value)], at)

    def put_many(
        self, entries: Sequence[tuple[bytes, tuple[Message, str]]], at: datetime | None = None
    ) -> None:
        """Store several dead letters in one transaction; see
        :meth:`DeadLetterStore.put_many`. ``at``: as :meth:`restore`'s."""
        rows = self._sql.dialect.rows(entries, at)
        if not rows:
            return

        def store(conn: sqlite3.Connection) -> list[bytes]:
            if len(rows) == 1:  # each statement decides alone: no transaction needed
                return [self._upsert(conn, *rows[0])]
            conn.execute("BEGIN IMMEDIATE")
            with conn:  # committed, or rolled back if one fails
                # All at once, each under its own id, unless one id holds another
                # payload (a row not written): then undone, and each row in turn.
                # A statement of many rows: bound at once, and one step for SQLite.
                before = conn.total_changes
                conn.execute("SAVEPOINT every_row")
                for start in range(0, len(rows), _ROWS_A_STATEMENT):
                    chunk = rows[start : start + _ROWS_A_STATEMENT]
                    params = [value for row in chunk for value in (row[0], *row[2])]
                    conn.execute(self._sql.upsert_rows(len(chunk)), params)
                if conn.total_changes - before == len(rows):
                    return [row[0] for row in rows]
                conn.execute("ROLLBACK TO every_row")
                return [self._upsert(conn, *row) for row in rows]

        letters = f"dead letter {rows[0][0]!r}" if len(rows) == 1 else f"{len(rows)} dead letters"
        keys = self._write(f"store {letters}", store)
        for (message_id, data, _), key in zip(rows, keys, strict=True):
            log_stored(logger, message_id, key, len(data))

    def _upsert(
        self, conn: sqlite3.Connection, message_id: bytes, data: bytes, fields: tuple[Any, ...]
    ) -> bytes:
        for key in storage_keys(message_id, data):
            if conn.execute(self._sql.upsert, (key, *fields)).fetchall():
                return key
        raise DLQError(
            f"SQLite DLQ at {self.path!r}: cannot store dead letter {message_id!r}: "
            "too many other payloads already stored under this id; delete some"
        )

    def record_attempt(self, message_id: bytes) -> int:
        """Count one more attempt at ``message_id``; see :class:`DeadLetterStore`."""
        rows = self._write(
            f"count an attempt at message {message_id!r}",
            lambda conn: conn.execute(
                self._sql.count_attempt, (message_id, self._sql.dialect.now())
            ).fetchall(),
        )
        return int(rows[0][0])

    def forget_attempts(self, message_id: bytes) -> None:
        """Drop the attempts counted for ``message_id``; see :class:`DeadLetterStore`."""
        self._write(
            f"forget the attempts at message {message_id!r}",
            lambda conn: conn.execute(self._sql.forget_attempts, (message_id,)),
        )

    def __delitem__(self, message_id: bytes) -> None:
        if type(message_id) is not bytes:
            raise KeyError(message_id)
        deleted = self._write(
            f"delete {message_id!r}",
            lambda conn: conn.execute(self._sql.delete, (message_id,)).rowcount,
        )
        if not deleted:
            raise KeyError(message_id)

    def delete_many(self, message_ids: Iterable[bytes]) -> int:
        """Delete those of ``message_ids`` stored, in one transaction; see
        :meth:`DeadLetterStore.delete_many`."""
        keys = [(key,) for key in dict.fromkeys(message_ids) if type(key) is bytes]

        def delete(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            with conn:  # committed, or rolled back if a statement fails
                return conn.executemany(self._sql.delete, keys).rowcount

        return self._write(f"delete {len(keys)} dead letter(s)", delete) if keys else 0

    def close(self) -> None:
        """Close the connection; idempotent. The store cannot be used afterwards."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._pid == os.getpid():
                self._connection.close()
                if self._identity is not None:
                    self._identity.release()
            else:
                fork.inherited.append(self._connection)
        logger.debug("closed DLQ %s", self.path)

    def __repr__(self) -> str:
        return f"<SQLiteDLQ {self.path!r}{' closed' if self._closed else ''}>"
