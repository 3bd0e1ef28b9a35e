"""DLQ files written by missive 0.8.1: recognised, and their dead letters read without
ever unpickling.

0.8.1's ``SQLiteDLQ`` kept one table, ``messages (message_id BLOB PRIMARY KEY,
message_bytes BLOB, reason TEXT, inserted TEXT)``, with a pickle of the whole message
object in ``message_bytes`` and the time (``datetime``'s text, with its UTC offset) in
``inserted``. A pickle can run any code when loaded, so none is ever loaded here: a
value is recognised as a pickle by its opcodes (:mod:`pickletools` parses them without
building anything) and reported, never imported. A value that is not a pickle is taken
as the message's own bytes.
"""

from __future__ import annotations

import io
import os
import pickletools
import sqlite3
import warnings
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from missive.errors import DLQError
from missive.message import Message, RawMessage

__all__ = [
    "LEGACY_COLUMNS",
    "LEGACY_TABLE",
    "LegacyReport",
    "LegacyRow",
    "import_legacy",
    "is_legacy",
    "legacy_error",
    "looks_pickled",
    "path_of",
    "read_legacy",
]

#: 0.8.1's table of dead letters.
LEGACY_TABLE = "messages"
#: Its columns, the only ones read.
LEGACY_COLUMNS = ("message_id", "message_bytes", "reason", "inserted")

_SELECT = (
    "SELECT message_id, message_bytes, reason, inserted FROM messages ORDER BY inserted, rowid"
)

# The protocols whose pickles start with PROTO (2 to 5).
_PROTO = b"\x80"


def path_of(
    path: str | os.PathLike[str] | None, connection_str: str | None
) -> str | os.PathLike[str]:
    """``SQLiteDLQ``'s file: ``path``, or missive 0.8.1's ``connection_str`` (deprecated).

    :raises TypeError: if neither is given, or both.
    """
    if connection_str is not None:
        if path is not None:
            raise TypeError("SQLiteDLQ takes a path or connection_str, not both")
        warnings.warn(
            "SQLiteDLQ(connection_str=...) is deprecated: pass the file's path as the "
            "first argument, SQLiteDLQ(path)",
            DeprecationWarning,
            stacklevel=3,
        )
        return connection_str
    if path is None:
        raise TypeError("SQLiteDLQ needs the database file's path: SQLiteDLQ(path)")
    return path


def is_legacy(conn: sqlite3.Connection) -> bool:
    """Whether the database holds 0.8.1's ``messages`` table, with its columns."""
    rows = conn.execute(f"PRAGMA table_info({LEGACY_TABLE})").fetchall()
    return {row[1] for row in rows} == set(LEGACY_COLUMNS)


def legacy_error(path: str) -> str:
    """The text of the :class:`DLQError` for a 0.8.1 DLQ at ``path``: what to run."""
    return (
        f"cannot open the SQLite DLQ at {path!r}: it is a missive 0.8.1 DLQ (table "
        f"{LEGACY_TABLE}); copy its dead letters into a new DLQ with: missive dlq "
        f"import-legacy --from {path} --dlq NEW.db"
    )


def looks_pickled(data: bytes) -> bool:
    """Whether ``data`` is a pickle, judged by its opcodes alone, never loaded.

    A pickle of protocol 2 or later starts with PROTO and its number; one of any
    protocol is a run of valid opcodes, using the stack and memo soundly, that ends
    in STOP at the last byte.
    """
    if data[:1] == _PROTO and len(data) > 1 and 2 <= data[1] <= 5:
        return True
    try:
        for opcode, _arg, position in pickletools.genops(data):
            if opcode.name == "STOP":
                if position != len(data) - 1:
                    return False
                # dis checks the stack and memo use too, still building nothing.
                pickletools.dis(data, out=io.StringIO())
                return True
    except Exception:  # pickletools raises ValueError and others on what is no pickle
        return False
    return False


@dataclass(frozen=True)
class LegacyRow:
    """One row of a 0.8.1 DLQ, as stored: its payload is not decoded."""

    message_id: bytes
    data: bytes
    reason: str
    inserted: datetime | None

    @property
    def pickled(self) -> bool:
        """Whether ``data`` is a pickle (and so cannot be imported)."""
        return looks_pickled(self.data)


@dataclass
class LegacyReport:
    """What an import did: the ids imported and the ids left out, and why."""

    imported: list[bytes] = field(default_factory=list)
    pickled: list[bytes] = field(default_factory=list)
    unreadable: list[bytes] = field(default_factory=list)


def _as_bytes(value: object) -> bytes | None:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    # 0.8.1 wrote aware UTC times; a naive one is taken as UTC too.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_legacy(path: str) -> Iterator[LegacyRow | bytes]:
    """The rows of the 0.8.1 DLQ at ``path``, oldest first, read-only.

    A row whose columns do not hold what 0.8.1 wrote (no bytes) is given as its id
    alone (bytes), to be reported; one without even an id is skipped.

    :raises DLQError: if the file is missing, is no SQLite database, or is no 0.8.1 DLQ.
    """
    if not Path(path).is_file():
        raise DLQError(f"cannot read the 0.8.1 DLQ {path!r}: no such file; check the path")
    uri = "file:" + quote(str(Path(path).absolute())) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise DLQError(f"cannot read the 0.8.1 DLQ {path!r} ({type(exc).__name__})") from None
    try:
        if not is_legacy(conn):
            raise DLQError(
                f"cannot read {path!r} as a missive 0.8.1 DLQ: it has no table {LEGACY_TABLE} "
                f"with the columns {', '.join(LEGACY_COLUMNS)}"
            )
        for message_id, data, reason, inserted in conn.execute(_SELECT):
            key, payload = _as_bytes(message_id), _as_bytes(data)
            if key is None:
                continue
            if payload is None:
                yield key
                continue
            text = reason if isinstance(reason, str) else "imported from missive 0.8.1"
            yield LegacyRow(key, payload, text, _time(inserted))
    except sqlite3.Error as exc:
        raise DLQError(
            f"cannot read the 0.8.1 DLQ {path!r} ({type(exc).__name__}: {exc}); "
            "check that it is an SQLite database"
        ) from None
    finally:
        conn.close()


def import_legacy(path: str, store: MutableMapping[bytes, tuple[Message, str]]) -> LegacyReport:
    """Copy the dead letters of the 0.8.1 DLQ at ``path`` into ``store``.

    Each row that is not a pickle becomes a :class:`~missive.RawMessage` with its id,
    its bytes and its reason, dead-lettered at its 0.8.1 time when the store can keep
    it (:meth:`SQLiteDLQ.restore <missive.dlq.sqlite.SQLiteDLQ.restore>`). Pickled
    rows are reported, never loaded. The 0.8.1 file is only read.

    :raises DLQError: if ``path`` cannot be read as a 0.8.1 DLQ, or the store fails.
    """
    report = LegacyReport()
    restore = getattr(store, "restore", None)
    for row in read_legacy(path):
        if isinstance(row, bytes):
            report.unreadable.append(row)
        elif row.pickled:
            report.pickled.append(row.message_id)
        else:
            entry = (RawMessage(row.data, row.message_id), row.reason)
            if restore is not None:
                restore(row.message_id, entry, row.inserted)
            else:
                store[row.message_id] = entry
            report.imported.append(row.message_id)
    return report
