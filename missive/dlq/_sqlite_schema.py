"""Opening an SQLiteDLQ's database: path checks, pragmas, schema and clear errors."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from missive.errors import DLQError

__all__ = ["ATTEMPTS_TABLE", "SCHEMA_VERSION", "TABLE", "open_database", "problem"]

logger = logging.getLogger("missive.dlq.sqlite")

#: The schema version this module writes, stored in ``PRAGMA user_version``.
SCHEMA_VERSION = 1
#: The one table that holds the dead letters.
TABLE = "missive_dead_letters"
#: The table that counts attempts at handling redelivered messages.
ATTEMPTS_TABLE = "missive_attempts"

_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        seq INTEGER PRIMARY KEY,
        message_id BLOB NOT NULL UNIQUE,
        raw_data BLOB NOT NULL,
        message_class TEXT NOT NULL,
        attributes TEXT NOT NULL,
        reason TEXT NOT NULL,
        summary TEXT NOT NULL,
        handler TEXT,
        exc_type TEXT,
        traceback TEXT,
        first_dead_lettered_at TEXT NOT NULL,
        dead_lettered_at TEXT NOT NULL,
        times INTEGER NOT NULL DEFAULT 1
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_dead_lettered_at ON {TABLE} (dead_lettered_at)",
    # Added without a version change: older readers ignore a table they do not use.
    f"""CREATE TABLE IF NOT EXISTS {ATTEMPTS_TABLE} (
        message_id BLOB PRIMARY KEY,
        attempts INTEGER NOT NULL,
        last_attempt_at TEXT NOT NULL
    )""",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)


def open_database(path: str, timeout: float) -> sqlite3.Connection:
    """A connection to the DLQ database at ``path``, in WAL mode, with its schema.

    :raises DLQError: saying what is wrong with ``path`` and what to do.
    """
    _check_path(path)
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise DLQError(problem(path, exc, "open the database", timeout)) from exc
    try:
        _prepare(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise DLQError(problem(path, exc, "open the database", timeout)) from exc
    except BaseException:
        conn.close()
        raise
    logger.debug("opened DLQ %s (schema version %d)", path, SCHEMA_VERSION)
    return conn


def _check_path(path: str) -> None:
    if path == ":memory:":
        return
    where = Path(path)
    if where.is_dir():
        raise DLQError(
            f"cannot open the SQLite DLQ at {path!r}: it is a directory; "
            f"give the path of a database file instead, such as {str(where / 'dlq.db')!r}"
        )
    directory = where.absolute().parent
    if not directory.exists():
        raise DLQError(
            f"cannot open the SQLite DLQ at {path!r}: its directory {str(directory)!r} does "
            "not exist; create it (mkdir -p) or choose another path"
        )
    if not directory.is_dir():
        raise DLQError(
            f"cannot open the SQLite DLQ at {path!r}: {str(directory)!r} is not a directory; "
            "choose another path"
        )


def _prepare(conn: sqlite3.Connection, path: str) -> None:
    # Reading the header first reports a file that is not a database.
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise DLQError(_newer(path, version))
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal" and path != ":memory:":
        raise DLQError(
            f"cannot open the SQLite DLQ at {path!r}: SQLite refused WAL mode (journal "
            f"mode is {mode!r}); put the file on a local file system"
        )
    conn.execute("PRAGMA synchronous = FULL")
    # A write transaction even when the schema exists: it proves the file is writable.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise DLQError(_newer(path, version))
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _newer(path: str, version: int) -> str:
    return (
        f"cannot open the SQLite DLQ at {path!r}: it has schema version {version}, newer "
        f"than this Missive's {SCHEMA_VERSION}; upgrade Missive or use another file"
    )


def problem(path: str, exc: sqlite3.Error, what: str, timeout: float) -> str:
    """The text of a :class:`DLQError`: where, what failed, and what to do about it."""
    text = str(exc)
    if "not a database" in text:
        advice = "it is not an SQLite database (or is corrupt); point the DLQ at a new file"
    elif "unable to open" in text:
        advice = (
            "the file cannot be opened or created; check that the path is a file in a "
            "directory this process can write to"
        )
    elif "readonly" in text or "read-only" in text:
        advice = "it is read-only; make the file and its directory writable by this process"
    elif "locked" in text or "busy" in text:
        advice = (
            f"another process held it locked for over {timeout:g} s; "
            "raise the timeout or find the process holding it"
        )
    elif "disk" in text or "full" in text:
        advice = "the disk is full or failing; free space or move the DLQ"
    else:
        advice = "check the file and its directory"
    return f"SQLite DLQ at {path!r}: cannot {what} ({type(exc).__name__}: {text}); {advice}"
