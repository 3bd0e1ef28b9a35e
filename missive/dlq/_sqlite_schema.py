"""Opening an SQLiteDLQ's database: path checks, pragmas, schema and clear errors."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from missive.dlq._legacy import LEGACY_TABLE, is_legacy, legacy_error
from missive.dlq._sql import SQLITE
from missive.dlq._sqlite_file import APPLICATION_ID
from missive.errors import DLQError

__all__ = [
    "ATTEMPTS_TABLE",
    "AUDIT_TABLE",
    "CORRUPT_ADVICE",
    "SCHEMA_VERSION",
    "TABLE",
    "open_database",
    "problem",
    "run_steps",
]

logger = logging.getLogger("missive.dlq.sqlite")

#: The schema version this module writes, stored in ``PRAGMA user_version``.
SCHEMA_VERSION = 2
#: The one table that holds the dead letters.
TABLE = "missive_dead_letters"
#: The table that counts attempts at handling redelivered messages.
ATTEMPTS_TABLE = "missive_attempts"
#: The table of the operations run on the DLQ (schema version 2).
AUDIT_TABLE = "missive_audit"

_DEAD_LETTERS, _ATTEMPTS = SQLITE.tables()
_ARCHIVE_COLUMNS, _AUDIT = SQLITE.upgrade()
_SCHEMA = (
    _DEAD_LETTERS.format(table=TABLE),
    f"CREATE INDEX IF NOT EXISTS {TABLE}_dead_lettered_at ON {TABLE} (dead_lettered_at)",
    # Added without a version change: older readers ignore a table they do not use.
    _ATTEMPTS.format(attempts=ATTEMPTS_TABLE),
    _AUDIT.format(audit=AUDIT_TABLE),
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
# Version 1 to 2: the archive's columns (the audit table comes with _SCHEMA).
_UPGRADE_1 = tuple(f"ALTER TABLE {TABLE} ADD COLUMN {column}" for column in _ARCHIVE_COLUMNS)
# A version 1 file opened read-only reads as version 2 with nothing archived and no
# audit: temporary objects shadow the file's (their schema is searched first).
_READ_ONLY_1 = (
    f"CREATE TEMP VIEW {TABLE} AS SELECT *, NULL AS archived_at, "  # noqa: S608
    f"NULL AS expires_at FROM main.{TABLE}",
    _AUDIT.format(audit=AUDIT_TABLE).replace("CREATE TABLE", "CREATE TEMP TABLE"),
)


def run_steps(conn: sqlite3.Connection, steps: Sequence[tuple[Any, Sequence[Any]]]) -> list[int]:
    """Run each step's statement with each of its parameter tuples, in one transaction
    (committed, or rolled back if one fails); how many rows each step changed."""
    conn.execute("BEGIN IMMEDIATE")
    counts = []
    with conn:
        for statement, rows in steps:
            changed = 0
            for params in rows:
                cursor = conn.execute(statement, params)
                cursor.fetchall()
                changed += max(cursor.rowcount, 0)
            counts.append(changed)
    return counts


def open_database(
    path: str, timeout: float, *, read_only: bool = False, allow_other_tables: bool = False
) -> sqlite3.Connection:
    """A connection to the DLQ database at ``path``, checked, with its schema.

    Writable: in WAL mode, with the schema created if missing (but never in a
    database that holds other tables and no DLQ, unless ``allow_other_tables``).
    ``read_only``: opened so that nothing can change the file; the DLQ must exist.
    Either way the file is checked for corruption first (``PRAGMA quick_check``).

    :raises DLQError: saying what is wrong with ``path`` and what to do.
    """
    _check_path(path)
    target, uri = (_read_only_uri(path), True) if read_only else (path, False)
    try:
        conn = sqlite3.connect(
            target, timeout=timeout, isolation_level=None, check_same_thread=False, uri=uri
        )
    except sqlite3.Error as exc:
        raise DLQError(problem(path, exc, "open the database", timeout)) from exc
    try:
        if read_only:
            _check_read_only(conn, path)
        else:
            _prepare_waiting(conn, path, allow_other_tables, timeout)
    except sqlite3.Error as exc:
        conn.close()
        raise DLQError(problem(path, exc, "open the database", timeout)) from exc
    except BaseException:
        conn.close()
        raise
    logger.debug("opened DLQ %s (schema version %d)", path, SCHEMA_VERSION)
    return conn


def _read_only_uri(path: str) -> str:
    return "file:" + quote(str(Path(path).absolute())) + "?mode=ro"


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


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
    ).fetchall()
    return {row[0] for row in rows}


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _check_kind(conn: sqlite3.Connection, path: str, allow_other_tables: bool) -> bool:
    """Whether the database holds the DLQ's table; raise if it is something else."""
    version = _version(conn)
    tables = _tables(conn)
    if TABLE in tables:
        if version > SCHEMA_VERSION:
            raise DLQError(_newer(path, version))
        return True
    others = sorted(tables - {ATTEMPTS_TABLE, AUDIT_TABLE})
    if LEGACY_TABLE in tables and not allow_other_tables and is_legacy(conn):
        raise DLQError(legacy_error(path))
    if version != 0 or (others and not allow_other_tables):
        held = f"tables {', '.join(others[:5])}" if others else "no tables"
        raise DLQError(
            f"cannot open the SQLite DLQ at {path!r}: it is not a Missive DLQ (it holds "
            f"{held}, user_version {version}, and no table {TABLE}); point the DLQ at a "
            "file of its own, or pass allow_other_tables=True to add the DLQ's tables "
            "to this database"
        )
    return False


def _check_sound(conn: sqlite3.Connection, path: str) -> None:
    rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    if rows != [("ok",)]:
        raise DLQError(
            f"cannot open the SQLite DLQ at {path!r}: the database disk image is malformed "
            f"(quick_check found damage); {CORRUPT_ADVICE}"
        )


def _check_read_only(conn: sqlite3.Connection, path: str) -> None:
    # Reading the header first reports a file that is not a database.
    if not _check_kind(conn, path, allow_other_tables=False):
        raise DLQError(
            f"cannot open the SQLite DLQ at {path!r}: it has no table {TABLE}, so it is not "
            "a Missive DLQ (yet); check the path"
        )
    _check_sound(conn, path)
    if _version(conn) < SCHEMA_VERSION:
        for statement in _READ_ONLY_1:
            conn.execute(statement)


def _prepare_waiting(
    conn: sqlite3.Connection, path: str, allow_other_tables: bool, timeout: float
) -> None:
    """:func:`_prepare`, tried again for up to ``timeout`` seconds while another process
    holds the file: when several open a new file at once, switching it to WAL can
    answer "database is locked" at once, without SQLite's busy wait."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _prepare(conn, path, allow_other_tables)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.02)


def _prepare(conn: sqlite3.Connection, path: str, allow_other_tables: bool) -> None:
    # Every check comes before WAL mode and the schema: a database that is not a DLQ
    # is left exactly as it was.
    _check_kind(conn, path, allow_other_tables)
    _check_sound(conn, path)
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
        # another process may have been first
        if _check_kind(conn, path, allow_other_tables) and _version(conn) < SCHEMA_VERSION:
            for statement in _UPGRADE_1:
                conn.execute(statement)
            logger.info("upgraded DLQ %s to schema version %d", path, SCHEMA_VERSION)
        for statement in _SCHEMA:
            conn.execute(statement)
        only_ours = _tables(conn) <= {TABLE, ATTEMPTS_TABLE, AUDIT_TABLE}
        if only_ours and conn.execute("PRAGMA application_id").fetchone()[0] == 0:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    # Copies the first page, with the application id, into the file itself, where
    # FileIdentity reads it.
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _newer(path: str, version: int) -> str:
    return (
        f"cannot open the SQLite DLQ at {path!r}: it has schema version {version}, newer "
        f"than this Missive's {SCHEMA_VERSION}; upgrade Missive or use another file"
    )


#: What to do about a damaged DLQ file.
CORRUPT_ADVICE = (
    "nothing more is written to it; move it aside (with its -wal and -shm files), "
    "recover what it holds (sqlite3 FILE .recover) and point the DLQ at a new file"
)


def problem(path: str, exc: sqlite3.Error, what: str, timeout: float) -> str:
    """The text of a :class:`DLQError`: where, what failed, and what to do about it."""
    text = str(exc)
    if "not a database" in text:
        advice = "it is not an SQLite database (or is corrupt); point the DLQ at a new file"
    elif "malformed" in text:
        advice = CORRUPT_ADVICE
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
